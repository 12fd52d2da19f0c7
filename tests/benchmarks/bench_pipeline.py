"""Images/s of ``run_batch`` (what ``restorekit run DIR -o OUT`` does) on a folder of small images, with and without
the decode/encode pipeline (``workers``), interleaved in one process, and the outputs compared byte for byte.

    python tests/benchmarks/bench_pipeline.py --folder /tmp/small256 --model spatial_rnn.denoise --limit 200

``--batch 4 8`` adds ``Restorer(batch=N)`` runs (images of one size through the network together), with how
their outputs differ from one at a time; ``--device cuda`` measures on a GPU (the GPU's own figures):

    python tests/benchmarks/bench_pipeline.py --folder /tmp/small256 --limit 200 --batch 4 8 --device cuda

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
    r = Restorer(name, pretrained=bundled, device="cpu", batch=1)
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
    rb = Restorer(name, pretrained=bundled, device="cpu", batch=len(x))
    rb.model.load_state_dict(r.model.state_dict())  # the same (random) weights
    with torch.inference_mode():
        single = torch.cat([r._restore_channels(x[i : i + 1]) for i in range(len(x))])
        rb._restore_channels(x)
        t_batch = min(timed(rb._restore_channels, x) for _ in range(2))
        diff = float((rb._restore_channels(x) - single).abs().max())
    rates[f"one call on a batch of {len(x)}"] = len(x) / t_batch
    base = rates[f"one at a time, {threads} threads"]
    for label, rate in rates.items():
        extra = f"   largest difference {diff:.1e}" if label.startswith("one call") else ""
        print(f"{name:22s} {label:34s} {rate:7.2f} img/s   ratio {rate / base:.2f}x{extra}", flush=True)


def compare(a: Path, b: Path, files: list[Path]) -> str:
    """How the outputs in ``b`` differ from those in ``a``: files byte-identical, pixels off, the largest step."""
    import numpy as np
    from PIL import Image

    same = sum((a / f.name).read_bytes() == (b / f.name).read_bytes() for f in files)
    off = total = worst = 0
    for f in files:
        x = np.asarray(Image.open(a / f.name), dtype=np.int32)
        y = np.asarray(Image.open(b / f.name), dtype=np.int32)
        d = np.abs(x - y)
        off, total, worst = off + int((d > 0).sum()), total + d.size, max(worst, int(d.max()))
    return f"{same}/{len(files)} files byte-identical, {off / total:.2e} of values differ, by at most {worst}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--make-folder", action="store_true")
    ap.add_argument("--model", nargs="+", default=["spatial_rnn.denoise"])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each setting")
    ap.add_argument("--scaling", action="store_true", help="threads, concurrent images and network batches instead")
    ap.add_argument(
        "--batch",
        type=int,
        nargs="+",
        help="also run the folder with Restorer(batch=N) for each N (--scaling: the batch size, default 8)",
    )
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
            scaling(name, files, args.threads, (args.batch or [8])[0])
        return
    for name in args.model:
        bundled = name.split(".")[0] in ("spatial_rnn", "dsrir")
        r = Restorer(name, pretrained=bundled, device=args.device, batch=1)
        # (label, restorer, workers): one at a time as before the pipeline, pipelined, pipelined and batched
        settings = [("one at a time", r, 0), ("pipelined", r, args.workers)]
        for b in args.batch or []:
            rb = Restorer(name, pretrained=bundled, device=args.device, batch=b)
            rb.model.load_state_dict(r.model.state_dict())  # the same (random) weights
            settings.append((f"batch {b}", rb, args.workers))
        times: dict[str, list[float]] = {label: [] for label, _, _ in settings}
        with tempfile.TemporaryDirectory() as tmp:
            outs = {label: Path(tmp) / label.replace(" ", "_") for label in times}
            for _, restorer, w in settings:
                run_batch(restorer, [str(f) for f in files[:16]], Path(tmp) / "warm", progress=False, workers=w)
                shutil.rmtree(Path(tmp) / "warm")
            for _ in range(args.repeats):
                for label, restorer, w in settings:
                    shutil.rmtree(outs[label], ignore_errors=True)
                    t = time.perf_counter()
                    report = run_batch(restorer, [str(f) for f in files], outs[label], progress=False, workers=w)
                    times[label].append(time.perf_counter() - t)
                    assert report.ok and len(report.written) == len(files), report.summary()
            base = min(times["one at a time"])
            for label, _, _ in settings:
                best = min(times[label])
                vs = "" if label == "one at a time" else f"   {compare(outs['one at a time'], outs[label], files)}"
                print(
                    f"{name:22s} {label:14s} {len(files) / best:7.2f} img/s   ratio {base / best:.2f}x{vs}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
