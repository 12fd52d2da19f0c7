"""Before/after picture of the four bundled spatial-RNN models (docs/images/before_after.jpg).

One row per model, three columns: the degraded input, restorekit's output, and the reference:

- ``spatial_rnn.denoise``: Gaussian noise sigma 25 (8-bit, clipped) -> denoised | clean;
- ``spatial_rnn.smooth_l0``: the clean image -> the network's smoothing | the L0 solver's (lambda 0.02);
- ``spatial_rnn.inpaint``: 50 % of the pixels missing (shown black) -> filled | clean;
- ``spatial_rnn.colorize``: grey with the colour of 3 % of the pixels -> colourised | clean.

PSNR against the reference is printed under each output. Everything is seeded, and the default image is
the synthetic test card of examples/make_sample.py at 3x (no benchmark image is redistributed), so the
picture is reproducible; ``--image`` uses your own. Runs offline on the bundled weights.

    python examples/before_after.py                          # writes docs/images/before_after.jpg
    python examples/before_after.py --image photo.png -o mine.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from restorekit import Restorer, degrade
from restorekit.filters import l0_smooth
from restorekit.image import read_image
from restorekit.metrics import DENOISE, psnr

HERE = Path(__file__).resolve().parent


def card() -> torch.Tensor:
    sys.path.insert(0, str(HERE))
    import make_sample

    arr = np.asarray(make_sample.make(scale=3), dtype=np.float32) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    arr = (x[0].clamp(0, 1) * 255).round().byte()
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return Image.fromarray(arr.permute(1, 2, 0).numpy())


def rows(clean: torch.Tensor, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(title, input, output, reference) per model."""
    out = []
    noisy = degrade.gaussian_noise(clean, 25, seed=seed, clip=True, quantize=True)
    out.append(("spatial_rnn.denoise (sigma 25)", noisy, Restorer("spatial_rnn.denoise").run(noisy), clean))
    l0 = l0_smooth(clean, 0.02).clamp(0, 1)
    out.append(("spatial_rnn.smooth_l0 (vs L0, lambda 0.02)", clean, Restorer("spatial_rnn.smooth_l0").run(clean), l0))
    _, known = degrade.mask_pixels(clean, ratio=0.5, seed=seed)
    filled = Restorer("spatial_rnn.inpaint").run(clean * known, mask=known)
    out.append(("spatial_rnn.inpaint (50% missing)", clean * known, filled, clean))
    grey, hints, hint_mask = degrade.color_hints(clean, ratio=0.03, seed=seed)
    shown = grey.expand(-1, 3, -1, -1) * (1 - hint_mask) + hints
    coloured = Restorer("spatial_rnn.colorize").run(shown, mask=hint_mask)
    out.append(("spatial_rnn.colorize (3% colour hints)", shown, coloured, clean))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="your own RGB image (default: the synthetic test card at 3x)")
    ap.add_argument("-o", "--output", default=str(HERE.parent / "docs" / "images" / "before_after.jpg"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    clean = read_image(args.image).color[None] if args.image else card()
    if clean.shape[1] != 3:
        raise SystemExit("--image must be a colour image (colourisation needs RGB)")
    h, w = clean.shape[-2:]
    pad, label = 6, 16
    table = rows(clean, args.seed)
    sheet = Image.new("RGB", (3 * w + 4 * pad, len(table) * (h + 2 * label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, inp, res, ref) in enumerate(table):
        top = pad + r * (h + 2 * label + pad)
        draw.text((pad, top), title, fill=(0, 0, 0))
        scores = [f"{what} {float(psnr(x, ref, DENOISE)[0]):.2f} dB" for what, x in (("input", inp), ("output", res))]
        for c, (img, caption) in enumerate(zip((inp, res, ref), [*scores, "reference"])):
            left = pad + c * (w + pad)
            sheet.paste(to_pil(img), (left, top + label))
            draw.text((left, top + label + h + 2), caption, fill=(0, 0, 0))
        print(f"{title}: {scores[0]}, {scores[1]}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=92, optimize=True) if out.suffix.lower() in (".jpg", ".jpeg") else sheet.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
