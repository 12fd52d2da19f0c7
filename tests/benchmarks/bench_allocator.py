"""Time and peak memory of one CPU image, with malloc as glibc leaves it and with the thresholds that
``restorekit.allocator`` raises, each in its own process (the setting is the process's), interleaved, best of
``--repeats`` runs per process; the ratio is retained / glibc's own:

    python tests/benchmarks/bench_allocator.py --archs spatial_rnn.denoise:1024 dsrir:512 memnet.denoise_s50:384

``NAME:SIZE`` restores a SIZE×SIZE random RGB image whole (``tile=None``) with 2 torch threads; models without
bundled weights run with random weights (the speed is the network's). ``--batch N`` restores N images of that size
in one network call instead (``Restorer(batch=N)``). ``--train`` times training steps instead (``bench_train.py``'s
``Trainer.train_step`` on a random batch of ``--batch`` patches of SIZE, in restorekit-train's CPU modes),
seconds per step:

    python tests/benchmarks/bench_allocator.py --train --batch 8 --archs dsrir:64 memnet:31 msrn:48 spatial_rnn:64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def child(name: str, size: int, repeats: int, threads: int, batch: int, train: bool) -> None:
    import resource
    import time

    import numpy as np
    import torch

    from restorekit import Restorer, allocator

    torch.set_num_threads(threads)
    if train:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_train import MODES, measure

        from restorekit.registry import get_record
        from restorekit.train.loop import fast_modes

        modes = fast_modes(get_record(name).arch, torch.device("cpu"))  # what restorekit-train runs by default
        mode = next(label for label, flags in MODES.items() if flags == modes)
        step = measure(name, device="cpu", batch=batch, steps=repeats, mode=mode, patch=size)["s_per_step"]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"seconds": step, "peak": peak, "retained": allocator.retained()}))
        return
    bundled = name.split(".")[0] in ("spatial_rnn", "dsrir")
    r = Restorer(name, pretrained=bundled, device="cpu", tile=None, batch=batch)
    rng = np.random.default_rng(0)
    images = [rng.random((size, size, 3), dtype=np.float32) for _ in range(batch)]
    r.run([x[:64, :64] for x in images])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r.run(images if batch > 1 else images[0])
        times.append((time.perf_counter() - t) / batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": min(times), "peak": peak, "retained": allocator.retained()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["spatial_rnn.denoise:1024"], metavar="NAME:SIZE")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs in each process")
    ap.add_argument("--rounds", type=int, default=2, help="processes of each setting, interleaved")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--train", action="store_true", help="time training steps instead of inference")
    ap.add_argument("--child", nargs=2, metavar=("NAME", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.repeats, args.threads, args.batch, args.train)
        return
    for spec in args.archs:
        name, size = spec.rsplit(":", 1)
        runs: dict[str, list[dict]] = {"system": [], "retained": []}
        for _ in range(args.rounds):
            for setting in runs:
                env = {**os.environ, "RESTOREKIT_MALLOC": "system" if setting == "system" else ""}
                cmd = [sys.executable, __file__, "--child", name, size, "--repeats", str(args.repeats)]
                cmd += ["--threads", str(args.threads), "--batch", str(args.batch)] + ["--train"] * args.train
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                runs[setting].append(json.loads(out.strip().splitlines()[-1]))
        assert not any(r["retained"] for r in runs["system"]) and all(r["retained"] for r in runs["retained"])
        sys_s = min(r["seconds"] for r in runs["system"])
        ret_s = min(r["seconds"] for r in runs["retained"])
        sys_p = max(r["peak"] for r in runs["system"])
        ret_p = max(r["peak"] for r in runs["retained"])
        what = "  train step" if args.train else ""
        print(
            f"{name:22s} {size:>5s} px  batch {args.batch}{what}  glibc {sys_s:7.3f} s  retained {ret_s:7.3f} s  "
            f"ratio {ret_s / sys_s:.2f}x   peak {sys_p / 2**20:6.0f} -> {ret_p / 2**20:6.0f} MiB "
            f"({ret_p / sys_p:.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
