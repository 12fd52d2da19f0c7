"""What the ``eval_*.py`` scripts share: their command line, subsets of a benchmark folder, subset labels.

A figure measured on the first N images of a set is labelled so (``"CBSD68 sigma 25, first 4 images"``), in the
printed table, the JSON and the ``Metric`` tuples alike, so that it is never compared with a full-set figure.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def parser(description: str, *, data_root: Path, data_help: str, only: list[str], only_help: str):
    """The options every evaluation script takes (its weights option is its own)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-root", type=Path, default=data_root, help=data_help)
    ap.add_argument("--only", nargs="+", choices=sorted(set(only)), help=only_help)
    ap.add_argument("--limit", type=int, default=0, help="first N images of each set (0: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="measure the model only, not the degraded input")
    ap.add_argument("--json", type=Path)
    return ap


def parse(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def subset(root: Path, folder: str, limit: int, tmp: Path) -> Path:
    """The first ``limit`` images (sorted by name) of a clean folder, or of both halves of a paired one."""
    src = root / folder
    dst = tmp / f"{folder.replace('/', '_')}_{limit}"
    if dst.is_dir():
        return dst
    parts = ("input", "target") if (src / "input").is_dir() else ("",)
    for name in parts:
        (dst / name).mkdir(parents=True)
        for p in sorted((src / name).glob("*.png"))[:limit]:
            shutil.copy(p, dst / name / p.name)
    return dst


def label(base: str, limit: int, images: int) -> str:
    """``base``, or ``base, first N images`` when the figure is of a subset of the set."""
    if limit and images == limit:
        return f"{base}, first {limit} image{'s' if limit > 1 else ''}"
    return base
