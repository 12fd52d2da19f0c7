"""Images/s of ``run_batch`` (what ``restorekit run DIR -o OUT`` does) on a folder of small images, with and without
the decode/encode pipeline (``workers``), interleaved in one process, and the outputs compared byte for byte.

    python tests/benchmarks/bench_pipeline.py --folder /tmp/small256 --model spatial_rnn.denoise --limit 200

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
    args = ap.parse_args()

    from restorekit import Restorer
    from restorekit.batch import run_batch

    torch.set_num_threads(args.threads)
    if args.make_folder:
        make_folder(args.folder, args.limit, args.size)
    files = sorted(args.folder.glob("*.png"))[: args.limit]
    print(f"{len(files)} images from {args.folder}, torch threads {args.threads}, workers {args.workers}")
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
