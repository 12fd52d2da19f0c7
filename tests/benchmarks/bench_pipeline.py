"""Images/s of ``run_batch`` (what ``restorekit run DIR -o OUT`` does) on a folder of small images, with and without
the decode/encode pipeline (``workers``), interleaved in one process, and the outputs compared byte for byte.

    python tests/benchmarks/bench_pipeline.py --folder /tmp/small256 --model spatial_rnn.denoise --limit 200

``--scaling`` measures instead why batching cannot gain on the CPU: on decoded 256x256 images (no I/O), the
images/s of one at a time at 1 and at ``--threads`` torch threads, of ``--threads`` images at once in as many
Python threads (one torch thread each: a batch spread over the cores), and of one network call on a batch of
``--batch`` images, each as a ratio to one at a time at ``--threads`` threads, with the batch's largest
difference from one at a time:

    python tests/benchmarks/bench_pipeline.py --folder /tmp/small256 --scaling --limit 16 --model spatial_rnn.denoise

``--make-folder`` first writes the 256x256 crops it uses (three corners of each CBSD68 image, 200 in all) into
``--folder``; the crops stay outside the repository. Models without bundled weights run with random weights
(``pretrained=False``): the speed is the network's, not its training's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "denoise" / "CBSD68"


def make_folder(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for path in sorted(DATA.rglob("*.png")):
        im = Image.open(path).convert("RGB")
        w, h = im.size
        for x, y in ((0, 0), (w - size, h - size), (0, h - size)):
            if k < n:
                im.crop((x, y, x + size, y + size)).save(folder / f"{k:03d}.png")
                k += 1
    if k < n:
        raise SystemExit(f"only {k} crops could be made from {DATA}")


def scaling(name: str, files: list[Path], threads: int, batch: int) -> None:
    import threading

    from restorekit import Restorer
    from restorekit.image import read_image

    bundled = name.split(".")[0] in ("spatial_rnn", "dsrir")
    r = Restorer(name, pretrained=bundled, device="cpu")
    planars = [read_image(f) for f in files]

    def one_at_a_time(items: list) -> None:
        for p in items:
            r.restore_planar(p)

    def timed(fn, *a) -> float:
        t = time.perf_counter()
        fn(*a)
        return time.perf_counter() - t

    n = len(planars)
    rates = {}
    for k in (1, threads):
        torch.set_num_threads(k)
        one_at_a_time(planars[:1])
        rates[f"one at a time, {k} thread{'s' if k > 1 else ''}"] = n / min(
            timed(one_at_a_time, planars) for _ in range(2)
        )
    torch.set_num_threads(1)

    def streams() -> None:
        ts = [threading.Thread(target=one_at_a_time, args=(planars[i::threads],)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    rates[f"{threads} images at once, 1 thread each"] = n / min(timed(streams) for _ in range(2))
    torch.set_num_threads(threads)
    x = torch.stack([p.color for p in planars[:batch]])
    with torch.inference_mode():
        single = torch.cat([r._restore_channels(x[i : i + 1]) for i in range(len(x))])
        t_batch = min(timed(r._restore_channels, x) for _ in range(2))
        diff = float((r._restore_channels(x) - single).abs().max())
    rates[f"one call on a batch of {len(x)}"] = len(x) / t_batch
    base = rates[f"one at a time, {threads} threads"]
    for label, rate in rates.items():
        extra = f"   largest difference {diff:.1e}" if label.startswith("one call") else ""
        print(f"{name:22s} {label:34s} {rate:7.2f} img/s   ratio {rate / base:.2f}x{extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--make-folder", action="store_true")
    ap.add_argument("--model", nargs="+", default=["spatial_rnn.denoise"])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each setting")
    ap.add_argument("--scaling", action="store_true", help="threads, concurrent images and network batches instead")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    from restorekit import Restorer
    from restorekit.batch import run_batch

    torch.set_num_threads(args.threads)
    if args.make_folder:
        make_folder(args.folder, args.limit, args.size)
    files = sorted(args.folder.glob("*.png"))[: args.limit]
    print(f"{len(files)} images from {args.folder}, torch threads {args.threads}, workers {args.workers}")
    if args.scaling:
        for name in args.model:
            scaling(name, files, args.threads, args.batch)
        return
    for name in args.model:
        bundled = name.split(".")[0] in ("spatial_rnn", "dsrir")
        r = Restorer(name, pretrained=bundled, device="cpu")
        times: dict[int, list[float]] = {0: [], args.workers: []}
        with tempfile.TemporaryDirectory() as tmp:
            outs = {w: Path(tmp) / f"w{w}" for w in times}
            run_batch(r, [str(f) for f in files[:2]], Path(tmp) / "warm", progress=False)
            for _ in range(args.repeats):
                for w, out in outs.items():
                    shutil.rmtree(out, ignore_errors=True)
                    t = time.perf_counter()
                    report = run_batch(r, [str(f) for f in files], out, progress=False, workers=w)
                    times[w].append(time.perf_counter() - t)
                    assert report.ok and len(report.written) == len(files), report.summary()
            same = all((outs[0] / f.name).read_bytes() == (outs[args.workers] / f.name).read_bytes() for f in files)
        base, piped = min(times[0]), min(times[args.workers])
        print(
            f"{name:22s} one at a time {len(files) / base:6.2f} img/s   pipelined {len(files) / piped:6.2f} img/s   "
            f"ratio {base / piped:.2f}x   outputs byte-identical: {same}",
            flush=True,
        )


if __name__ == "__main__":
    main()
