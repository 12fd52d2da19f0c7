"""Inference policy per architecture: each policy's forward time as a ratio to today's default, and GFLOP/s.

For one record per architecture (the real default config, random weights), one process times the network's
forward pass under each policy, interleaved (every repeat runs every policy once, in a rotated order) and
reports the median of each as a ratio to today's default (contiguous tensors, eager):

- ``contiguous`` (today's default), ``channels_last`` (weights and input in NHWC strides),
- ``compile`` and ``channels_last+compile`` (``torch.compile``, inductor; the first call's compilation is
  timed apart as ``compile_s`` and not in the median), unless ``--no-compile``;
- on CUDA, where the record validates a half precision, the same four in that dtype too.

The FLOPs of one forward are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
matrix products; element-wise work is not counted, as usual). The spatial RNN's recurrent scan is a custom op
that the counter does not know: its multiply-adds are counted by hand from its equation,
h_t = (1 - g_t) * x_t + g_t * h_{t-1}: 4 FLOPs per element (one subtraction, two products, one sum). The
achieved GFLOP/s is given as a fraction of a dense matmul's (2048 x 2048 @ 2048 x 2048 in the same dtype,
median of repeats interleaved with the networks' in the same process): how close each network runs to what
the machine's matmul reaches.

    python tests/benchmarks/bench_policy.py --size 128 --repeats 5 --threads 2
    python tests/benchmarks/bench_policy.py --size 128 --repeats 5 --threads 2 --no-compile
    python tests/benchmarks/bench_policy.py --device cuda --size 512 --repeats 20
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from restorekit import ops, policy
from restorekit.feeding import Feeding
from restorekit.registry import get_arch, get_record
from restorekit.weights import load_model

RECORDS = {
    "msrn": "msrn.sr_x4",
    "memnet": "memnet.denoise_s50",  # M6R6
    "mprnet": "mprnet.deblur",
    "dsrir": "dsrir.all_in_one",
    "spatial_rnn": "spatial_rnn.denoise",
}
MATMUL = 2048


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, x: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(x)
    _sync(device)
    return time.perf_counter() - t0


def _matmul_seconds(device: torch.device, dtype: torch.dtype) -> float:
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.rand(MATMUL, MATMUL, generator=g).to(device, dtype)
    b = torch.rand(MATMUL, MATMUL, generator=g).to(device, dtype)
    _sync(device)
    t0 = time.perf_counter()
    a @ b
    _sync(device)
    return time.perf_counter() - t0


def _scan_flops(x_shape, g_shape, horizontal, reverse, out_shape=None) -> int:
    return 4 * math.prod(x_shape)


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(FLOPs counted by FlopCounterMode, of which the hand-counted scan's) for one forward pass."""
    mapping = {}
    scan_op = None
    if ops.backend(x.device) == "native":
        scan_op = torch.ops.restorekit.scan
        mapping[scan_op] = _scan_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model(x)
    total = counter.get_total_flops()
    scan = int(counter.get_flop_counts()["Global"].get(scan_op, 0)) if scan_op is not None else 0
    return int(total), scan


def variants(record, device: torch.device, with_compile: bool) -> list[tuple[str, torch.dtype, str, bool]]:
    dtypes = [torch.float32]
    if device.type == "cuda":
        for name in ("float16", "bfloat16"):
            if name in record.dtypes:
                dtypes.append(getattr(torch, name))
                break
    out = []
    for dtype in dtypes:
        prefix = "" if dtype == torch.float32 else str(dtype).removeprefix("torch.") + "+"
        for comp in (False, True) if with_compile else (False,):
            for fmt in policy.MEMORY_FORMATS:
                name = {"contiguous": "compile", "channels_last": "channels_last+compile"}[fmt] if comp else fmt
                out.append((prefix + name, dtype, fmt, comp))
    return out


def bench_arch(arch: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    record = get_record(RECORDS[arch])
    spec = get_arch(record.arch)
    declared = spec.policy.for_device(device)
    base = load_model(record.name, pretrained=False, device=device, dtype="float32").eval()
    feeding = Feeding.of(spec, record.config)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, record.in_channels, args.size, args.size, generator=g)
    mask = torch.ones(1, 1, args.size, args.size) if feeding.condition else None
    x32 = feeding.to_network(image, mask).to(device)
    flops, scan_flops = count_flops(base, x32)

    runs = {}
    for label, dtype, fmt, comp in variants(record, device, not args.no_compile):
        pol = policy.InferencePolicy(memory_format=fmt)
        model = policy.prepare_model(copy.deepcopy(base).to(dtype), pol)
        fn = policy.compile_model(model, device, record.name) if comp else model
        x = policy.prepare_input(x32.to(dtype), pol)
        first = _timed(fn, x, device)  # warm-up; for a compiled variant, the compilation
        runs[label] = {"fn": fn, "x": x, "dtype": dtype, "first_s": first, "times": [], "compiled": comp}
    matmul = {dt: [] for dt in {r["dtype"] for r in runs.values()}}
    labels = list(runs)
    for rep in range(args.repeats):
        order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
        for label in order:
            r = runs[label]
            r["times"].append(_timed(r["fn"], r["x"], device))
        for dt in matmul:
            matmul[dt].append(_matmul_seconds(device, dt))
    rows = []
    # Today's default: contiguous and eager, in the record's validated half precision on CUDA where there is one.
    today = labels[len(labels) // 2] if len({r["dtype"] for r in runs.values()}) > 1 else "contiguous"
    base_s = statistics.median(runs[today]["times"])
    for label, r in runs.items():
        med = statistics.median(r["times"])
        mm_gflops = 2 * MATMUL**3 / statistics.median(matmul[r["dtype"]]) / 1e9
        gflops = flops / med / 1e9
        rows.append(
            {
                "arch": arch,
                "record": record.name,
                "policy": label,
                "declared": label == today.removesuffix("contiguous") + declared.memory_format,
                "today": label == today,
                "median_s": round(med, 4),
                "ratio": round(med / base_s, 3),
                "min_ratio": round(min(r["times"]) / base_s, 3),
                "max_ratio": round(max(r["times"]) / base_s, 3),
                "compile_s": round(r["first_s"], 1) if r["compiled"] else None,
                "gflop": round(flops / 1e9, 2),
                "scan_gflop": round(scan_flops / 1e9, 3),
                "gflops_per_s": round(gflops, 2),
                "matmul_gflops_per_s": round(mm_gflops, 1),
                "fraction_of_matmul": round(gflops / mm_gflops, 3),
                "size": args.size,
                "repeats": args.repeats,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="input side in pixels (square)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per policy (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--archs", nargs="+", default=list(RECORDS), choices=list(RECORDS))
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to compile)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warnings.simplefilter("ignore", UserWarning)  # random-weight records' license notices
    t0 = time.perf_counter()
    header = (
        f"device={device} threads={torch.get_num_threads()} size={args.size} repeats={args.repeats} "
        f"torch={torch.__version__} scan={ops.backend(device)}"
    )
    print(header, flush=True)
    table = []
    for arch in args.archs:
        for row in bench_arch(arch, args, device):
            print(json.dumps(row), flush=True)
            table.append(row)
    print()
    print(
        "| arch (record) | policy | ratio to today's default (min-max) | median s | compile s | GFLOP | GFLOP/s | "
        "fraction of matmul |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        scan = f" (scan {r['scan_gflop']})" if r["scan_gflop"] else ""
        mark = " (declared)" if r["declared"] else ""
        print(
            f"| {r['arch']} ({r['record']}) | {r['policy']}{mark} | {r['ratio']:.2f} ({r['min_ratio']:.2f}-"
            f"{r['max_ratio']:.2f}) | {r['median_s']:.3f} | {r['compile_s'] if r['compile_s'] is not None else '-'} | "
            f"{r['gflop']:.1f}{scan} | {r['gflops_per_s']:.1f} | {r['fraction_of_matmul']:.3f} |"
        )
    print(f"\nmatmul {MATMUL}^3 GFLOP/s (median per arch): {sorted({r['matmul_gflops_per_s'] for r in table})}")
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
