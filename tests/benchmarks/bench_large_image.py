"""A large image through MPRNet / DSRIR with tiling: peak memory vs the whole-image estimate, and throughput.

For each model, two subprocesses (each peak RSS, ru_maxrss, is its own), full-size networks with random
weights (memory and speed do not depend on the weight values):

1. baseline: the whole image at ``--probe`` size (default 512x512), untiled; its peak RSS growth per
   pixel is the activation footprint, and its megapixels/s the untiled throughput;
2. the ``--size`` image (default 4000x3000, 12 MP) through the Restorer with ``--tile`` (default 512).

Printed: the tiled run's peak RSS, the whole-image peak it avoids (footprint x pixels + the baseline
process's own memory), their ratio, and the throughput ratio tiled / untiled.

    python tests/benchmarks/bench_large_image.py --size 4000x3000
    python tests/benchmarks/bench_large_image.py --size 1000x750 --models mprnet.deblur dsrir.all_in_one
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from restorekit.registry import get_record
from restorekit.restorer import Restorer
name, w, h, tile, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
r = Restorer(name, pretrained=False, device="cpu", tile=tile or None)
x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
r.run(x[:, :32, :32])  # warm-up: allocator, kernels, the network's own memory
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
y = r.run(x)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
assert tuple(y.shape) == (3, h, w) and bool(torch.isfinite(y).all())
print(json.dumps({"model": name, "width": w, "height": h, "tile": r.last_tile, "seconds": dt,
                  "megapixels_per_s": w * h / 1e6 / dt, "base_bytes": base, "peak_bytes": peak,
                  "activation_bytes_per_pixel": (peak - base) / (w * h)}))
"""


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def run(name: str, w: int, h: int, tile: int, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(w), str(h), str(tile), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mprnet.deblur", "dsrir.all_in_one"])
    ap.add_argument("--size", type=_size, default=(4000, 3000), help="WxH of the large image")
    ap.add_argument("--probe", type=_size, default=(512, 512), help="WxH of the untiled baseline")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    gib = 1 << 30
    for name in args.models:
        whole = run(name, *args.probe, 0, args.threads)
        print(json.dumps({"variant": "whole (baseline)", **whole}))
        tiled = run(name, *args.size, args.tile, args.threads)
        w, h = args.size
        estimate = whole["activation_bytes_per_pixel"] * w * h + whole["base_bytes"]
        print(json.dumps({"variant": f"tile {args.tile}", **tiled}))
        print(
            json.dumps(
                {
                    "model": name,
                    "size": f"{w}x{h}",
                    "tiled_peak_gib": round(tiled["peak_bytes"] / gib, 2),
                    "whole_image_estimate_gib": round(estimate / gib, 1),
                    "peak_ratio_tiled_vs_whole_estimate": round(tiled["peak_bytes"] / estimate, 4),
                    "megapixels_per_s_tiled": round(tiled["megapixels_per_s"], 5),
                    "megapixels_per_s_whole_probe": round(whole["megapixels_per_s"], 5),
                    "throughput_ratio_tiled_vs_whole": round(tiled["megapixels_per_s"] / whole["megapixels_per_s"], 3),
                }
            )
        )


if __name__ == "__main__":
    main()
