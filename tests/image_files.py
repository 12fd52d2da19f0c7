"""Seeded PNG folders for tests: what the ``image_folder`` fixture writes (import it where a fixture cannot reach).

Three kinds of content, each from its own seeded generator so that a folder's bytes depend only on the arguments:

- ``"noise"``: uniform random 8-bit pixels (``numpy.random.default_rng(seed).integers``).
- ``"blocks"``: flat 8x8 blocks of random colour, something a denoiser can learn (``RandomState(seed).rand``).
- ``"smooth"``: random colours on a grid of every 4th pixel, bicubic-upsampled (``default_rng(seed).random``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Size = tuple[int, int]


def _pixels(kind: str, sizes: Sequence[Size], seed: int) -> Iterable[np.ndarray]:
    if kind == "noise":
        rng = np.random.default_rng(seed)
        for h, w in sizes:
            yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif kind == "blocks":
        legacy = np.random.RandomState(seed)
        for h, w in sizes:
            base = legacy.rand(h // 8 + 1, w // 8 + 1, 3)
            yield (np.kron(base, np.ones((8, 8, 1)))[:h, :w] * 255).astype(np.uint8)
    elif kind == "smooth":
        rng = np.random.default_rng(seed)
        for h, w in sizes:
            base = rng.random((h // 4 + 2, w // 4 + 2, 3))
            yield np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))
    else:
        raise ValueError(f"unknown image kind {kind!r}: noise, blocks or smooth")


def write_images(
    folder: Path,
    n: int = 4,
    size: Size | Sequence[Size] = (24, 32),
    *,
    seed: int = 0,
    kind: str = "noise",
    grey: Iterable[int] = (),
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``n`` PNGs (``img0.png``, ... or ``names``) of ``size`` (one (h, w), or one per image) into ``folder``.

    The images whose index is in ``grey`` are saved with one channel (the first of the colour image).
    """
    sizes = [tuple(size)] * n if isinstance(size[0], int) else [tuple(s) for s in size]  # type: ignore[arg-type]
    if len(sizes) != n:
        raise ValueError(f"{n} images but {len(sizes)} sizes")
    names = list(names) if names is not None else [f"img{i}.png" for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    grey = set(grey)
    paths = []
    for i, (name, arr) in enumerate(zip(names, _pixels(kind, sizes, seed))):
        path = folder / name
        Image.fromarray(arr[:, :, 0] if i in grey else arr).save(path)
        paths.append(path)
    return paths


def write_pairs(
    root: Path,
    n: int = 1,
    size: Size = (32, 40),
    *,
    seed: int = 0,
    clean: str = "target",
    degraded: str = "input",
    noise: int = 3,
    names: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Paired folders as evaluation reads them: ``root/clean`` holds random images, ``root/degraded`` the same
    images plus uniform integer noise in [-noise, noise] (one generator: image, then its noise, image by image)."""
    rng = np.random.default_rng(seed)
    names = list(names) if names is not None else [f"img{i}.png" for i in range(n)]
    for sub in (clean, degraded):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        target = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        noisy = np.clip(target.astype(int) + rng.integers(-noise, noise + 1, target.shape), 0, 255).astype(np.uint8)
        Image.fromarray(target).save(root / clean / name)
        Image.fromarray(noisy).save(root / degraded / name)
    return root / clean, root / degraded
