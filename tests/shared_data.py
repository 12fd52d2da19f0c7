"""Access to ``../shared/data`` (the public benchmark images) for acceptance tests; skip where absent."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(*parts: str) -> Path:
    """The folder ``DATA/parts``, or skip the test saying what is missing."""
    path = DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"benchmark data not found at {path} (CI provides ../shared/data next to the project)")
    return path


def load(path: Path) -> torch.Tensor:
    """An 8-bit PNG as a float64 (1, C, H, W) tensor in [0, 1], grey kept as one channel."""
    arr = np.asarray(Image.open(path)).astype(np.float64) / 255.0
    t = torch.from_numpy(arr)
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


def published_bicubic() -> dict[tuple[str, int], tuple[float, float]]:
    """{(dataset, scale): (psnr, ssim)} read from the data README's bicubic-baseline sentence."""
    require("sr")
    text = " ".join((DATA / "README.md").read_text().split())
    start = text.index("Bicubic baseline")
    sentence = text[start : text.index("Set14 note", start)]
    table = {}
    for name in ("Set5", "Set14"):
        part = sentence[sentence.index(name + " ") :].split(";")[0]
        for s, p, q in re.findall(r"x(\d)\s+(\d+\.\d+)(?:\s*dB)?\s*/\s*(\d\.\d+)", part):
            table[(name, int(s))] = (float(p), float(q))
    assert len(table) == 6, f"could not read the published bicubic table from {DATA / 'README.md'}: {table}"
    return table


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a block with one torch thread. The acceptance tests issue thousands of small tensor operations; on
    a CI machine whose cores are busy with other jobs, each multi-threaded operation waits for a descheduled
    worker (measured 20x slower on the shared 2-core development machine). Results do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
