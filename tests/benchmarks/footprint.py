"""Measure a network's peak activation memory per input pixel on the CPU (fp32, inference mode).

Each measurement runs in a fresh subprocess: peak RSS (ru_maxrss) after one forward pass at
``size`` x ``size`` minus the peak after a warm-up at 16 x 16, divided by the pixel count. The
figures go into each ArchSpec's ``footprint``, which ``tile="auto"`` uses to size tiles.

    python tests/benchmarks/footprint.py msrn --size 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
from restorekit.weights import build_model
from restorekit.registry import get_record, get_arch
rec = get_record(sys.argv[1]); size = int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
model = build_model(rec.arch, rec.config).eval()
c = rec.in_channels
with torch.inference_mode():
    model(torch.rand(1, c, 16, 16))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    x = torch.rand(1, c, size, size)
    y = model(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"model": rec.name, "size": size, "bytes_per_pixel": (peak - base) / size**2}))
"""


def measure(name: str, size: int, threads: int = 2) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(size), str(threads)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    for name in args.models:
        print(json.dumps(measure(name, args.size)))


if __name__ == "__main__":
    main()
