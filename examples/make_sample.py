"""Regenerate examples/sample.png (a small synthetic test card: edges, text, gradients, colour) and
examples/noisy_sample.png (the same card with seeded Gaussian noise, sigma 25 on 0-255, saved as 8-bit:
the input of the README's main job, ``spatial_rnn.denoise``).

Synthetic on purpose: the benchmark datasets may not be redistributed, so the package ships none.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make(width: int = 160, height: int = 120, scale: int = 1) -> Image.Image:
    """The card at ``scale`` times (width, height); ``scale=1`` is examples/sample.png exactly."""
    width, height = width * scale, height * scale
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / scale
    base = np.stack([xx * scale / width, yy * scale / height, 0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], -1)
    img = Image.fromarray((base * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    s = scale
    draw.ellipse((12 * s, 14 * s, 70 * s, 72 * s), outline=(255, 255, 255), width=3 * s)
    draw.rectangle((90 * s, 20 * s, 146 * s, 60 * s), fill=(200, 40, 40), outline=(0, 0, 0), width=2 * s)
    for i in range(0, 50, 5):
        draw.line(((90 + i) * s, 70 * s, (100 + i) * s, 110 * s), fill=(10, 10, 10), width=s)
    if s == 1:
        draw.text((14, 86), "restorekit", fill=(255, 255, 0))
    else:
        draw.text((14 * s, 86 * s), "restorekit", fill=(255, 255, 0), font_size=10 * s)
    return img


def add_noise(img: Image.Image, sigma: float = 25.0, seed: int = 0) -> Image.Image:
    """Gaussian noise (sigma on 0-255), clipped and rounded to 8 bits as a camera would store it."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(arr + rng.normal(0.0, sigma, arr.shape)), 0, 255).astype(np.uint8))


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.png")
    make().save(out, optimize=True)
    noisy = out.with_name("noisy_sample.png")
    add_noise(make()).save(noisy, optimize=True)
    print(out, noisy)
