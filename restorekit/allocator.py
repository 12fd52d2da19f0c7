"""Keep the memory a network frees for its next layer, instead of handing it back to the system and faulting it in
again: on Linux with glibc, the CPU inference of every architecture spends much of its time there on large images.

glibc's ``malloc`` serves every block above its *mmap threshold* with a fresh ``mmap`` and returns it with
``munmap`` when freed; the threshold adapts upwards only to 32 MiB. A network's activations on an ordinary photo are
larger (the spatial RNN's 16 channels on a 1024×1024 image: 64 MiB), so every layer's output is a new mapping whose
every 4 KiB page the kernel faults in and zeroes on first touch, and the time goes to page faults rather than
arithmetic. :func:`retain_freed_memory` raises the mmap threshold to 1 GiB and the trim threshold (free memory at
the top of the heap that is kept rather than returned) to 2 GiB, so that freed activations are reused by the next
layer. docs/performance.md ("Memory the network frees") has the measured speed and peak memory
(``tests/benchmarks/bench_allocator.py``); the results do not change.

The :class:`~restorekit.Restorer` and the training loop call it when they run on the CPU. The setting is the
process's: the memory a run has freed stays with the process (up to the trim threshold) for the next image rather
than going back to the system. ``RESTOREKIT_MALLOC=system`` (read when the first CPU Restorer or Trainer is made)
leaves malloc as it is. Elsewhere (another C library, macOS, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["MMAP_THRESHOLD", "PEAK_GROWTH", "TRIM_THRESHOLD", "retain_freed_memory", "retained"]

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # up to 2 GiB of free memory at the heap's top stay with the process (a C int)
# The process's peak memory with the raised thresholds, against glibc's own, at worst among the architectures
# (bench_allocator.py: DSRIR at 512 px, 2.05x; the others 1.14-1.74x): freed blocks that do not fit the next request
# stay with the process. The Restorer's automatic tile and batch sizes count with it on the CPU.
PEAK_GROWTH = 2.1
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_state: bool | None = None  # None: not tried yet; then whether the thresholds are raised


def retained() -> bool:
    """Whether this process runs with the raised thresholds (:func:`retain_freed_memory` succeeded)."""
    return bool(_state)


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once for this process; True when they are raised (now or before).

    Does nothing, and returns False, where the C library is not glibc or ``RESTOREKIT_MALLOC`` is ``system``."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if (os.environ.get("RESTOREKIT_MALLOC") or "").strip().lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; a threshold it refuses leaves that one as it was
    _state = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _state
