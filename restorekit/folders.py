"""Image folders: which files of a folder are images, and the paired layouts of benchmark and training folders.

One rule for every caller (``restorekit run`` folders, :func:`restorekit.evaluate.evaluate`, training data):

* a file is an image when its suffix, in any case, is one of :data:`restorekit.image.IMAGE_EXTENSIONS`;
* names starting with ``.`` are skipped: hidden files, the ``.<name>.<random>.tmp<suffix>`` temporaries an
  interrupted write leaves behind (:func:`restorekit.image.write_image`), macOS ``._name`` companions;
* only regular files (or links to them) count, in sorted path order;
* :func:`image_files` looks into subfolders only when asked (``restorekit run`` does; a benchmark or training
  folder's subfolders are its layout, see :func:`find_pairs`).

>>> layout, pairs = find_pairs("../shared/data/sr/Set5", scale=4)  # doctest: +SKIP
>>> layout                                                         # doctest: +SKIP
'x4/HR + x4/LR'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InputError
from .image import IMAGE_EXTENSIONS

__all__ = ["is_image_file", "is_inside", "image_files", "find_pairs"]


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image by the folder rule (suffix in any case, not hidden); no file access."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def is_inside(path: Path, folder: Path | None) -> bool:
    """Whether the (resolved) ``path`` is ``folder`` or lies under it; False when ``folder`` is None."""
    return folder is not None and (path == folder or folder in path.parents)


def image_files(
    folder: str | os.PathLike, *, recursive: bool = False, exclude: str | os.PathLike | None = None
) -> list[Path]:
    """The image files of ``folder`` (with its subfolders' when ``recursive``), sorted; anything inside the folder
    ``exclude`` (an output folder inside the input) is left out."""
    root = Path(folder)
    skip = Path(exclude).resolve() if exclude is not None else None
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in candidates if is_image_file(p) and p.is_file() and (skip is None or not is_inside(p.resolve(), skip))
    )


def _by_name(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in image_files(folder)}


def find_pairs(data: str | os.PathLike, scale: int | None = None) -> tuple[str, list[tuple[str, Path | None, Path]]]:
    """(layout, [(name, input path or None for clean images, target path)]) for a benchmark or training folder.

    Layouts, the first that exists: ``x{scale}/LR`` + ``x{scale}/HR`` (when ``scale`` is given), ``LR`` + ``HR``,
    ``input`` + ``target`` (paired by file name), else the folder's own images (``"clean images"``).
    """
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass --data with a folder of images or of HR/LR pairs")
    candidates = []
    if scale is not None:
        candidates.append((f"x{scale}/LR", f"x{scale}/HR"))
    candidates += [("LR", "HR"), ("input", "target")]
    for inp, tgt in candidates:
        if (root / inp).is_dir() and (root / tgt).is_dir():
            inputs, targets = _by_name(root / inp), _by_name(root / tgt)
            missing = sorted(set(targets) ^ set(inputs))
            if missing:
                raise InputError(
                    f"{root}: {inp}/ and {tgt}/ must hold the same file names; unpaired: {', '.join(missing[:5])}"
                )
            if not targets:
                raise InputError(f"{root / tgt} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            return f"{tgt} + {inp}", [(n, inputs[n], targets[n]) for n in targets]
    scales = sorted(p.name for p in root.glob("x*") if p.is_dir() and re.fullmatch(r"x\d+", p.name))
    clean = _by_name(root)
    if not clean:
        hint = f"; it has {', '.join(scales)}: pass --scale" if scales and scale is None else ""
        raise InputError(
            f"{root} holds no images and no paired folders (x{{scale}}/HR + x{{scale}}/LR, HR + LR, "
            f"input + target){hint}"
        )
    return "clean images", [(n, None, p) for n, p in clean.items()]
