"""Regenerate examples/sample.png: a small synthetic test card (edges, text, gradients, colour).

Synthetic on purpose: the benchmark datasets may not be redistributed, so the package ships none.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make(width: int = 160, height: int = 120) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 7.0)], -1)
    img = Image.fromarray((base * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((12, 14, 70, 72), outline=(255, 255, 255), width=3)
    draw.rectangle((90, 20, 146, 60), fill=(200, 40, 40), outline=(0, 0, 0), width=2)
    for i in range(0, 50, 5):
        draw.line((90 + i, 70, 100 + i, 110), fill=(10, 10, 10), width=1)
    draw.text((14, 86), "restorekit", fill=(255, 255, 0))
    return img


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.png")
    make().save(out, optimize=True)
    print(out)
