"""Training throughput (patches/s) per architecture at its paper patch size: CPU fp32, and on CUDA fp32 vs
bf16 autocast + channels_last.

    python tests/benchmarks/bench_train.py --steps 3 --batch 4                 # every architecture, CPU
    python tests/benchmarks/bench_train.py --device cuda --steps 20 --batch 16  # GPU: fp32 and bf16+CL

Each row times ``Trainer.train_step`` (forward, the paper's loss, backward, optimiser and schedule step) on a
fixed random batch of the preset's patch size, after one warm-up step; the data pipeline is not included.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from restorekit.registry import get_record, list_archs
from restorekit.train.config import resolve
from restorekit.train.loop import Trainer


def measure(name: str, *, device: str, batch: int, steps: int, fast: bool) -> dict:
    cfg = resolve(name, overrides=dict(device=device, batch_size=batch, bf16=fast, channels_last=fast, out="/tmp/x"))
    trainer = Trainer(cfg, data=False)
    rec = trainer.record
    p = cfg.patch_size
    c = rec.in_channels + trainer.mask_channels
    s = 1 if rec.pre_upsample else trainer.scale
    inp, tgt = torch.rand(batch, c, p, p), torch.rand(batch, rec.out_channels, p * s, p * s)
    if trainer.mask_channels:
        inp[:, -1] = (inp[:, -1] > 0.5).float()
    trainer.train_step(inp, tgt)  # warm-up (allocations, native scan build, cuDNN autotune)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(inp, tgt)
    sync()
    dt = time.perf_counter() - t0
    return {
        "model": name,
        "device": str(trainer.device),
        "mode": "bf16+channels_last" if (trainer.bf16 and trainer.channels_last) else "fp32",
        "patch": p,
        "batch": batch,
        "steps": steps,
        "patches_per_s": round(batch * steps / dt, 2),
        "s_per_step": round(dt / steps, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--archs", nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for arch in args.archs or list_archs():
        name = get_record(arch).name
        modes = (False, True) if args.device.startswith("cuda") else (False,)
        for fast in modes:
            print(json.dumps(measure(name, device=args.device, batch=args.batch, steps=args.steps, fast=fast)))


if __name__ == "__main__":
    main()
