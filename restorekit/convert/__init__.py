"""Readers for the authors' checkpoint formats, each turning a file into a flat ``{key: tensor}`` mapping.

A reader only decodes its container (a pickle of tensors, a Caffe ``NetParameter``, a Paddle
``.pdparams`` pickle of numpy arrays, an MXNet NDArray list with the graph saved beside it); mapping
the authors' key names onto restorekit's modules is the architecture's ``filter_checkpoint`` (in
``restorekit/archs/``), which sees the reader's keys.

Formats are a table, not a chain of ``if``: ``name -> (module, function, file suffixes)``. The
module is imported only when a file of that format is read.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConversionError

__all__ = ["FORMATS", "detect_format", "read_foreign"]

# name -> (module under restorekit.convert, reader function, suffixes that select it in "auto" mode).
# "torch" and "safetensors" are read by restorekit.weights itself (no module here).
FORMATS: dict[str, tuple[str | None, str | None, tuple[str, ...]]] = {
    "torch": (None, None, (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar")),
    "safetensors": (None, None, (".safetensors",)),
    "caffe": ("caffe", "read_caffemodel", (".caffemodel",)),
    "paddle": ("paddle", "read_pdparams", (".pdparams",)),
    "mxnet": ("mxnet", "read_params", (".params",)),
}


def detect_format(path: str | os.PathLike[str], format: str = "auto") -> str:
    """The format named, or the one the file's suffix implies (``"torch"`` when none does)."""
    if format != "auto":
        if format not in FORMATS:
            raise ConversionError(f"unknown checkpoint format {format!r}; formats are: auto, {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    for name, (_, _, suffixes) in FORMATS.items():
        if suffix in suffixes:
            return name
    return "torch"


def read_foreign(path: str | os.PathLike[str], format: str) -> Mapping[str, Any]:
    """Read a caffe/paddle/mxnet/... file into ``{key: tensor}`` with the format's reader."""
    module, func, _ = FORMATS[format]
    if module is None or func is None:
        raise ValueError(f"format {format!r} is read by restorekit.weights.read_checkpoint")
    try:
        reader: Callable[[Path], Mapping[str, Any]] = getattr(importlib.import_module(f".{module}", __name__), func)
    except ModuleNotFoundError as exc:  # a format listed before its reader landed
        raise ConversionError(f"the {format} reader is not available in this restorekit ({exc})") from exc
    return reader(Path(path))
