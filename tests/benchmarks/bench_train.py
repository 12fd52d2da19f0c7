"""Training throughput (patches/s) per architecture and mode: fp32, channels_last, bf16 autocast, both.

    python tests/benchmarks/bench_train.py --steps 3 --batch 4                  # every architecture, CPU, all modes
    python tests/benchmarks/bench_train.py --archs dsrir --patch 64 --batch 8 --threads 1 2
    python tests/benchmarks/bench_train.py --archs dsrir --patch 64 --batch 8 --procs 2   # two processes, 1 thread each
    python tests/benchmarks/bench_train.py --archs dsrir --patch 64 --batch 8 --compile
    python tests/benchmarks/bench_train.py --device cuda --steps 20 --batch 16   # GPU

Each row times ``Trainer.train_step`` (forward, the paper's loss, backward, optimiser and schedule step) on a
fixed random batch, after warm-up steps (allocations, native scan build, oneDNN/cuDNN kernel choice); the data
pipeline is not included. Every row prints its ratio of patches/s to the fp32 row of the same architecture,
patch, batch and thread count measured in the same command. ``policy`` is what restorekit-train uses by default
on this device (``restorekit.train.loop.fast_modes``).

``--procs N`` runs N copies at once, one thread each, and reports their summed patches/s: what two
data-parallel processes (``torchrun --nproc_per_node 2``) could reach at best, before any gradient exchange.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from restorekit.registry import get_record, list_archs
from restorekit.train.config import resolve
from restorekit.train.loop import Trainer, fast_modes

MODES = {
    "fp32": (False, False),
    "channels_last": (False, True),
    "bf16": (True, False),
    "bf16+channels_last": (True, True),
}


def measure(
    name: str, *, device: str, batch: int, steps: int, mode: str, patch: int = 0, compile: bool = False, warmup: int = 1
) -> dict:
    bf16, cl = MODES[mode]
    over = dict(device=device, batch_size=batch, out="/tmp/x", compile=compile)
    if patch:
        over["patch_size"] = patch
    cfg = resolve(name, overrides=over)
    trainer = Trainer(cfg, data=False)
    trainer.set_modes(bf16=bf16, channels_last=cl)
    rec = trainer.record
    p = cfg.patch_size
    c = rec.in_channels + trainer.mask_channels
    s = 1 if rec.pre_upsample else trainer.scale
    gen = torch.Generator().manual_seed(0)
    inp, tgt = (
        torch.rand(batch, c, p, p, generator=gen),
        torch.rand(batch, rec.out_channels, p * s, p * s, generator=gen),
    )
    if trainer.mask_channels:
        inp[:, -1] = (inp[:, -1] > 0.5).float()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    t_warm = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(inp, tgt)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(inp, tgt)
    sync()
    dt = time.perf_counter() - t0
    return {
        "model": name,
        "device": str(trainer.device),
        "mode": mode + ("+compile" if compile else ""),
        "threads": torch.get_num_threads(),
        "patch": p,
        "batch": batch,
        "steps": steps,
        "warmup_s": round(t0 - t_warm, 2),
        "patches_per_s": round(batch * steps / dt, 3),
        "s_per_step": round(dt / steps, 3),
    }


def _worker(args: tuple) -> dict:
    name, kw = args
    torch.set_num_threads(1)
    return measure(name, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--patch", type=int, default=0, help="input patch size (0: the preset's)")
    ap.add_argument("--archs", nargs="*", default=None)
    ap.add_argument("--modes", nargs="*", default=None, choices=[*MODES, "all"], help="default: all on CPU")
    ap.add_argument("--threads", type=int, nargs="*", default=[0], help="torch CPU threads (0: torch's default)")
    ap.add_argument("--procs", type=int, default=1, help="run N one-thread copies at once and sum their rates")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (compile time in warmup_s)")
    args = ap.parse_args()
    modes = args.modes if args.modes and "all" not in args.modes else list(MODES)
    for arch in args.archs or list_archs():
        name = get_record(arch).name
        policy = fast_modes(arch, torch.device(args.device))
        for threads in args.threads:
            if threads:
                torch.set_num_threads(threads)
            base = None
            variants = [(m, False) for m in modes] + ([(m, True) for m in modes] if args.compile else [])
            for mode, comp in variants:
                kw = dict(
                    device=args.device,
                    batch=args.batch,
                    steps=args.steps,
                    mode=mode,
                    patch=args.patch,
                    compile=comp,
                    warmup=args.warmup + (2 if comp else 0),
                )
                if args.procs > 1:
                    with mp.get_context("spawn").Pool(args.procs) as pool:
                        rows = pool.map(_worker, [(name, kw)] * args.procs)
                    row = {**rows[0], "procs": args.procs, "threads": 1}
                    row["patches_per_s"] = round(sum(r["patches_per_s"] for r in rows), 3)
                else:
                    row = measure(name, **kw)
                if base is None and mode == "fp32" and not comp:
                    base = row["patches_per_s"]
                row["vs_fp32"] = round(row["patches_per_s"] / base, 3) if base else None
                row["policy"] = MODES[mode] == policy and not comp
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
