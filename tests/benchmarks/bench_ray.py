"""Images/s of the Ray engine (``restorekit run MODEL DIR -o OUT --engine ray``) against ``restorekit run`` on
one machine, interleaved in one process, and the outputs compared byte for byte.

    python tests/benchmarks/bench_ray.py --folder /tmp/small256 --limit 200 --model spatial_rnn.denoise

The folder is the one ``bench_pipeline.py --make-folder`` writes (256x256 crops of CBSD68). Ray is started once
(``ray.init(num_cpus=--cpus)``, its start-up timed apart); each Ray run includes what every run pays: planning,
starting the actor pool and loading the model in each actor. ``--actors`` and ``--batch-size`` are passed to
:func:`restorekit.distributed.run_ray`; by default one actor as wide as this process's torch threads, which is
what gives the same bytes as ``restorekit run``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--model", default="spatial_rnn.denoise")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--actors", type=int)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import ray

    from restorekit import Restorer
    from restorekit.batch import run_batch
    from restorekit.distributed import run_ray

    torch.set_num_threads(args.threads)
    files = sorted(args.folder.glob("*.png"))[: args.limit]
    if not files:
        raise SystemExit(f"no PNG files in {args.folder}: write them with bench_pipeline.py --make-folder")
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    start = time.perf_counter() - t
    print(f"{len(files)} images, torch threads {args.threads}, Ray with {args.cpus} CPUs (start-up {start:.1f} s)")
    r = Restorer(args.model, device="cpu")
    names = [str(f) for f in files]
    times: dict[str, list[float]] = {"run": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / k for k in times}
        for _ in range(args.repeats):
            for kind, out in outs.items():
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                if kind == "run":
                    report = run_batch(r, names, out, progress=False)
                else:
                    report = run_ray(
                        args.model, names, out, device="cpu", actors=args.actors, batch_size=args.batch_size
                    )
                times[kind].append(time.perf_counter() - t)
                assert report.ok and len(report.written) == len(files), report.summary()
        same = all((outs["run"] / f.name).read_bytes() == (outs["ray"] / f.name).read_bytes() for f in files)
    ray.shutdown()
    base, on_ray = min(times["run"]), min(times["ray"])
    print(
        f"{args.model:22s} restorekit run {len(files) / base:6.2f} img/s   --engine ray {len(files) / on_ray:6.2f} "
        f"img/s   ratio {base / on_ray:.2f}x   outputs byte-identical: {same}",
        flush=True,
    )


if __name__ == "__main__":
    main()
