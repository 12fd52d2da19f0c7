"""Training's image decoder against a plain Pillow decode of the same files, same process.

Decodes ``--count`` images of ``../shared/data/train/T91`` (or ``--folder``) with what training uses
(``restorekit.train.data._decode``: :func:`restorekit.image.read_array`, the decoder evaluation's
:func:`~restorekit.image.read_image` stands on) and with ``np.array(Image.open(p).convert("RGB"))``,
interleaved, best of ``--repeat`` rounds each, and prints the ratio restorekit / Pillow (< 1: faster).
The Pillow line is what training decoded with before it shared evaluation's decoder.

    python tests/benchmarks/bench_decode.py            # add --count N, --repeat N, --folder DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image


def pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return np.array(img.convert("RGB"), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train" / "T91"
    ap.add_argument("--folder", type=Path, default=default)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from restorekit.image import IMAGE_EXTENSIONS
    from restorekit.train.data import _decode

    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[: args.count]
    if not files:
        raise SystemExit(f"no images in {args.folder}")
    for p in files:  # same pixels for these (8-bit RGB, upright) files, and warm caches for both
        np.testing.assert_array_equal(_decode(p), pillow_rgb(p))
    best = {"restorekit": float("inf"), "pillow": float("inf")}
    for _ in range(args.repeat):
        for name, fn in (("restorekit", _decode), ("pillow", pillow_rgb)):
            t0 = time.perf_counter()
            for p in files:
                fn(p)
            best[name] = min(best[name], time.perf_counter() - t0)
    mp = sum(Image.open(p).width * Image.open(p).height for p in files) / 1e6
    for name, t in best.items():
        print(f"{name:>10}: {t * 1e3:8.1f} ms for {len(files)} images ({mp:.1f} MP, {mp / t:.0f} MP/s)")
    print(f"ratio restorekit / pillow: {best['restorekit'] / best['pillow']:.3f}")


if __name__ == "__main__":
    main()
