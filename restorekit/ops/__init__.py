"""The spatial RNN's recurrent scan as a native PyTorch custom op, with a pure-PyTorch fallback.

>>> import torch
>>> from restorekit import ops
>>> h = ops.scan(torch.rand(1, 16, 8, 8), torch.rand(1, 16, 8, 8), horizontal=True, reverse=False)

``scan`` computes h_t = (1 - g_t) * x_t + g_t * h_{t-1} (h_{-1} = 0) along the width
(``horizontal=True``) or the height of the last two dimensions, forward or ``reverse``: the four
directions L->R, R->L, T->B, B->T.

Backends (``backend()`` says which one runs):

- ``native``: the C++ kernels in ``csrc/`` (and the CUDA kernels when torch has CUDA and
  ``CUDA_HOME`` is set), registered as ``torch.ops.restorekit.scan`` with autograd and a fake
  kernel, so ``torch.compile`` and ``torch.library.opcheck`` work. Compiled on first use with
  ``torch.utils.cpp_extension.load`` (ninja) into ``$RESTOREKIT_EXT_CACHE``, else
  ``<restorekit cache>/extensions``, in a folder keyed by torch version, Python version and the
  hash of the sources and flags; a file lock keeps concurrent processes from building at once.
- ``reference``: ``restorekit/ops/reference.py``, one PyTorch step per row or column. Used when no
  compiler or ninja is found or the build fails (with a single warning), for devices the native
  library was not built for, or when ``RESTOREKIT_SCAN_BACKEND=reference``.
  ``RESTOREKIT_SCAN_BACKEND=native`` makes a failed build an error instead.

float32 results are bit-identical between the two; float16/bfloat16 accumulate in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..env import cache_dir
from ..errors import RestorekitError
from . import reference

__all__ = ["scan", "backend", "backend_info", "load_native", "ScanBackendError", "BACKEND_ENV", "CACHE_ENV"]

BACKEND_ENV = "RESTOREKIT_SCAN_BACKEND"  # auto (default) | native | reference
CACHE_ENV = "RESTOREKIT_EXT_CACHE"
CSRC = Path(__file__).with_name("csrc")
_CPU_SOURCES = ("scan.cpp", "scan_cpu.cpp")
_CUDA_SOURCES = ("scan_cuda.cu",)
_HEADERS = ("scan.h",)
# No fused multiply-add anywhere: float32 must round step by step like the reference. at::parallel_for is
# inline OpenMP when torch uses OpenMP (Linux wheels), so the kernels need -fopenmp there; the runtime
# (GOMP_parallel ...) resolves against the libgomp torch already loaded.
_OPENMP = bool(getattr(torch._C, "has_openmp", False))
if sys.platform == "win32":
    _CFLAGS = ["/O2", "/fp:precise"] + (["/openmp"] if _OPENMP else [])
else:
    _CFLAGS = ["-O3", "-ffp-contract=off"] + (["-fopenmp"] if _OPENMP else [])
_CUDA_CFLAGS = ["-O3", "--fmad=false"]


class ScanBackendError(RestorekitError):
    """The native scan was required (``RESTOREKIT_SCAN_BACKEND=native``) but could not be built or loaded."""


_lock = threading.Lock()
_state: dict[str, Any] = {"loaded": False, "ok": False, "cuda": False, "path": None, "reason": "not loaded yet"}
_warned: set[str] = set()


def _mode() -> str:
    mode = (os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if mode not in ("auto", "native", "reference"):
        raise ScanBackendError(f"{BACKEND_ENV}={mode!r} is not one of auto, native, reference")
    return mode


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def ext_cache_dir() -> Path:
    """Where compiled extensions live: ``$RESTOREKIT_EXT_CACHE``, else ``<restorekit cache>/extensions``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "extensions"


def _with_cuda() -> bool:
    from torch.utils import cpp_extension

    return bool(torch.cuda.is_available() and cpp_extension.CUDA_HOME)


def _build_key(with_cuda: bool) -> str:
    digest = hashlib.sha256()
    names = _CPU_SOURCES + _HEADERS + (_CUDA_SOURCES if with_cuda else ())
    for name in names:
        digest.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    digest.update(repr((torch.__version__, sys.version_info[:2], _CFLAGS, _CUDA_CFLAGS, with_cuda)).encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, released by the OS if the holder dies (POSIX flock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: torch's own FileBaton inside cpp_extension.load still serialises builds
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ninja_folder() -> str | None:
    """The folder to put in front of PATH for the build so that ninja is found: ``""`` when it is on PATH already,
    the ``ninja`` wheel's folder (an install requirement, next to the interpreter's scripts, which need not be
    on PATH), or None when there is no ninja at all."""
    if shutil.which("ninja") is not None:
        return ""
    try:
        import ninja

        folder = str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        return None
    return folder if shutil.which("ninja", path=folder) is not None else None


@contextlib.contextmanager
def _path_with(folder: str) -> Iterator[None]:
    """``folder`` in front of PATH while the block runs, then PATH exactly as it was.

    torch.utils.cpp_extension runs ``ninja`` by name, looked up on ``os.environ["PATH"]``, and takes no path or
    environment for it; so the build (and only the build, under :data:`_lock`) sees ninja's folder there."""
    if not folder:
        yield
        return
    before = os.environ.get("PATH")
    os.environ["PATH"] = folder if before is None else folder + os.pathsep + before
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


def _why_not_buildable() -> str | None:
    compiler = os.environ.get("CXX") or ("cl" if sys.platform == "win32" else "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; install g++ or clang, or set CXX)"
    if _ninja_folder() is None:
        return "ninja is not available (pip install ninja)"
    return None


def _build() -> None:
    from torch.utils import cpp_extension

    with_cuda = _with_cuda()
    name = f"restorekit_scan_{_build_key(with_cuda)}"
    folder = ext_cache_dir() / name
    sources = [str(CSRC / s) for s in _CPU_SOURCES + (_CUDA_SOURCES if with_cuda else ())]
    with _file_lock(folder.parent / f"{name}.lock"), _path_with(_ninja_folder() or ""):
        # We hold the lock: a 'lock' file left by torch's FileBaton is stale (a build killed mid-way).
        (folder / "lock").unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        path = cpp_extension.load(
            name=name,
            sources=sources,
            extra_cflags=_CFLAGS,
            extra_cuda_cflags=_CUDA_CFLAGS,
            extra_include_paths=[str(CSRC)],
            build_directory=str(folder),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=False,
        )
    _register_python_side()
    _state.update(ok=True, cuda=with_cuda, path=str(path), reason="built and loaded")


def load_native() -> bool:
    """Build (first use) and load the native library; False (with one warning) when it cannot be had."""
    if _state["loaded"]:  # lock-free once decided (and traceable by torch.compile)
        return bool(_state["ok"])
    with _lock:
        if _state["loaded"]:
            return bool(_state["ok"])
        _state["loaded"] = True
        problem = _why_not_buildable()
        if problem is None:
            try:
                _build()
            except Exception as err:  # noqa: BLE001 - any build or load failure falls back to the reference
                text = str(err).strip().splitlines()
                problem = f"building the extension failed: {' | '.join(text[-6:])[:1500]}"
        if problem is not None:
            _state["reason"] = problem
            if _mode() == "native":
                raise ScanBackendError(
                    f"{BACKEND_ENV}=native but the native scan is unavailable: {problem}. "
                    f"Unset {BACKEND_ENV} to fall back to the (slower) PyTorch reference."
                )
            _warn_once(
                "build",
                f"restorekit: the native spatial-RNN scan is unavailable ({problem}); using the PyTorch reference, "
                "which gives the same results more slowly.",
            )
        return bool(_state["ok"])


def backend(device: str | torch.device = "cpu") -> str:
    """``"native"`` or ``"reference"``: the backend :func:`scan` uses for tensors on ``device``.

    May build the extension (first call in a fresh cache).
    """
    return "native" if _native_for(torch.device(device)) else "reference"


def backend_info() -> dict[str, Any]:
    """Which backend runs, why, and where the library is (builds it on first call)."""
    mode = _mode()
    if mode != "reference":
        load_native()
    return {
        "mode": mode,
        "backend": backend("cpu"),
        "cuda_kernels": bool(_state["cuda"]),
        "library": _state["path"],
        "reason": "forced by " + BACKEND_ENV if mode == "reference" else _state["reason"],
    }


def _native_for(device: torch.device) -> bool:
    if _mode() == "reference":
        return False
    if not load_native():
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda" and _state["cuda"]:
        return True
    _warn_once(
        f"device-{device.type}",
        f"restorekit: no native scan kernel for {device.type} tensors; using the PyTorch reference there.",
    )
    return False


# ----------------------------------------------------------------------------------- registration
def _register_python_side() -> None:
    """Fake kernels and the autograd formula for the C++ ops (pytorch/extension-cpp's pattern)."""

    @torch.library.register_fake("restorekit::scan")
    def _(x: torch.Tensor, g: torch.Tensor, horizontal: bool, reverse: bool) -> torch.Tensor:
        torch._check(x.shape == g.shape, lambda: "one gate per element")
        torch._check(x.dtype == g.dtype, lambda: "x and g must share a dtype")
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("restorekit::scan_backward")
    def _(grad, g, x, h, horizontal, reverse):  # noqa: ANN001, ANN202
        like = torch.empty_like(x, memory_format=torch.contiguous_format)
        return like, torch.empty_like(like)

    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, g, horizontal, reverse = inputs
        ctx.save_for_backward(x, g, output)
        ctx.horizontal, ctx.reverse = horizontal, reverse

    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, g, h = ctx.saved_tensors
        dx, dg = torch.ops.restorekit.scan_backward(grad, g, x, h, ctx.horizontal, ctx.reverse)
        return dx, dg, None, None

    torch.library.register_autograd("restorekit::scan", backward, setup_context=setup_context)


class _ReferenceScan(torch.autograd.Function):
    """The reference forward/backward with the same gradient formula as the native op."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, g: torch.Tensor, horizontal: bool, reverse: bool) -> torch.Tensor:
        h = reference.scan_forward(x, g, horizontal, reverse)
        ctx.save_for_backward(x, g, h)
        ctx.horizontal, ctx.reverse = horizontal, reverse
        return h

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, g, h = ctx.saved_tensors
        dx, dg = reference.scan_backward(grad, g, x, h, ctx.horizontal, ctx.reverse)
        return dx, dg, None, None


def _use_native(device_type: str) -> bool:
    """:func:`_native_for` by device type, run eagerly even inside ``torch.compile``.

    Dynamo cannot trace the build behind it (the ``threading.Lock`` in :func:`load_native`, the file lock, the
    compiler), so it is marked as having a constant result: dynamo calls it once while tracing and puts the
    answer in the graph, which then calls the native op (an opaque custom op with a fake kernel) or the
    reference. A compiled graph keeps the backend it was traced with; ``RESTOREKIT_SCAN_BACKEND`` changed later
    applies to new compilations. The mark is the attribute ``torch.compiler.assume_constant_result`` sets, set
    directly because calling that function imports ``torch._dynamo`` (1.7 s) on the first use of the scan.
    """
    return _native_for(torch.device(device_type))


_use_native._dynamo_marked_constant = True  # type: ignore[attr-defined]


def scan(x: torch.Tensor, g: torch.Tensor, horizontal: bool = True, reverse: bool = False) -> torch.Tensor:
    """h_t = (1 - g_t) * x_t + g_t * h_{t-1} along W (``horizontal``) or H, forward or ``reverse``.

    ``x`` and ``g`` have the same shape (..., H, W) and dtype; differentiable in both. Works under
    ``torch.compile(fullgraph=True)``, also as the first call in a process (the library is built or loaded
    while tracing, outside the graph).
    """
    if x.shape != g.shape:
        raise ValueError(f"scan needs one gate per element: x has shape {tuple(x.shape)}, g {tuple(g.shape)}")
    horizontal, reverse = bool(horizontal), bool(reverse)
    if _use_native(x.device.type):
        return torch.ops.restorekit.scan(x, g, horizontal, reverse)
    return _ReferenceScan.apply(x, g, horizontal, reverse)
