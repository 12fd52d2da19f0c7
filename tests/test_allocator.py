"""restorekit.allocator: a CPU Restorer raises glibc's thresholds, so that a large freed block is reused instead of
faulted in again; RESTOREKIT_MALLOC=system leaves malloc alone. Each case runs in a fresh process (the setting is
the process's) and counts the page faults of allocating the same 256 MiB tensor again and again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's"
)

_PROBE = """
import json, resource, torch
from restorekit import Restorer, allocator
before = allocator.retained()
Restorer("spatial_rnn.denoise", device="cpu")
def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        x = torch.empty(64 << 20)  # 256 MiB, touched page by page
        x.fill_(1.0)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
faults()
print(json.dumps({"before": before, "retained": allocator.retained(), "faults": faults()}))
"""


def _probe(monkeypatch, malloc: str | None) -> dict:
    if malloc is None:
        monkeypatch.delenv("RESTOREKIT_MALLOC", raising=False)
    else:
        monkeypatch.setenv("RESTOREKIT_MALLOC", malloc)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_cpu_restorer_keeps_freed_memory_for_the_next_block(monkeypatch):
    kept = _probe(monkeypatch, None)
    system = _probe(monkeypatch, "system")
    assert kept["before"] is False and kept["retained"] is True
    assert system["retained"] is False
    pages = (256 << 20) // 4096
    # glibc's own malloc maps and unmaps each 256 MiB block: every page faults in again, four times
    assert system["faults"] > 3 * pages, system
    # retained, the block of the first round is reused: almost no new page
    assert kept["faults"] < pages // 4, kept


def test_retain_is_done_once_and_says_so():
    from restorekit import allocator

    first = allocator.retain_freed_memory()
    assert allocator.retain_freed_memory() is first and allocator.retained() is first


def test_automatic_tiling_counts_the_peak_growth_of_the_retained_heap(tiny_record, monkeypatch):
    from restorekit import Restorer, allocator, registry
    from restorekit.registry import get_arch

    if not allocator.retained():
        monkeypatch.delenv("RESTOREKIT_MALLOC", raising=False)
        monkeypatch.setattr(allocator, "_state", None)  # not tried yet in this process

    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu")
    assert allocator.retained(), "a CPU Restorer raised the thresholds"
    assert r._footprint() == pytest.approx(get_arch(rec.arch).footprint_for(rec.config) * allocator.PEAK_GROWTH)


def test_training_on_the_cpu_keeps_freed_memory_too(tmp_path, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_MALLOC", raising=False)
    probe = (
        "import json\n"
        "from restorekit import allocator\n"
        "from restorekit.train.config import resolve\n"
        "from restorekit.train.loop import Trainer\n"
        "before = allocator.retained()\n"
        f"Trainer(resolve('spatial_rnn', overrides=dict(device='cpu', out={str(tmp_path / 'run')!r})), data=False)\n"
        "print(json.dumps([before, allocator.retained()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True]
