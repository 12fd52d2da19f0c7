"""Tiled vs whole-image inference on the CPU: peak memory and time, as ratios, same command.

Each variant runs in its own subprocess so its peak RSS (ru_maxrss) is its own. The network is
MSRN x2 at reduced width (16 features, 4 blocks) so the whole-image baseline fits in memory: the
full-size x2 network needs ~9 KB per input pixel (tests/benchmarks/footprint.py), ~36 GB for a
2000x2000 image, which is exactly why restorekit tiles.

    python tests/benchmarks/bench_tiling.py --size 2000 --tiles 512 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from restorekit import registry
from restorekit.registry import WeightRecord
from restorekit.restorer import Restorer
size, tile, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
rec = WeightRecord(arch="msrn", tag="bench_x2", task="sr", description="bench", scale=2,
                   config={"scale": 2, "n_feats": 16, "n_blocks": 4, "n_colors": 3, "rgb_range": 255.0})
with registry.temporary(None, rec):
    torch.manual_seed(0)
    r = Restorer("msrn.bench_x2", pretrained=False, device="cpu", tile=None if tile == "0" else int(tile))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, size, size, generator=g)
    r.run(x[:, :64, :64])  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    y = r.run(x)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
torch.save(y[:, ::7, ::7].clone(), sys.argv[4])
print(json.dumps({"tile": int(tile), "seconds": dt, "peak_bytes": peak, "peak_over_base_bytes": peak - base,
                  "used_tile": r.last_tile}))
"""


def run(size: int, tile: int, threads: int, probe: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(tile), str(threads), probe],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import tempfile

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--tiles", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        whole = run(args.size, 0, args.threads, f"{tmp}/whole.pt")
        print(json.dumps({"variant": "whole", **whole}))
        ref = torch.load(f"{tmp}/whole.pt")
        for tile in args.tiles:
            res = run(args.size, tile, args.threads, f"{tmp}/t{tile}.pt")
            diff = float((torch.load(f"{tmp}/t{tile}.pt") - ref).abs().max())
            print(
                json.dumps(
                    {
                        "variant": f"tile {tile}",
                        **res,
                        "max_abs_diff_vs_whole": diff,
                        "time_ratio_vs_whole": res["seconds"] / whole["seconds"],
                        "peak_ratio_vs_whole": res["peak_bytes"] / whole["peak_bytes"],
                        "peak_over_base_ratio_vs_whole": res["peak_over_base_bytes"] / whole["peak_over_base_bytes"],
                    }
                )
            )


if __name__ == "__main__":
    main()
