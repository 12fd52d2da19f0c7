"""Checkpoint files of ``restorekit-train``: the ``restorekit-train/1`` format, read safely, written atomically.

The loop writes them (:mod:`restorekit.train.loop`) and export reads them (:mod:`restorekit.train.publish`);
both come here, so neither imports the other for this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import RestorekitError

__all__ = ["CHECKPOINT_FORMAT", "TrainingError", "load_checkpoint", "atomic_save"]

CHECKPOINT_FORMAT = "restorekit-train/1"


class TrainingError(RestorekitError):
    """A checkpoint that does not match the run, or a run that cannot continue."""


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    error: type[RestorekitError] | None = None,
) -> dict[str, Any]:
    """Read a ``restorekit-train/1`` checkpoint (``weights_only``: no code runs); ``error`` is raised on failure."""
    import pickle

    error = error or TrainingError
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise error(
            f"{path}: refused for safety: it needs more than tensors and plain containers to unpickle "
            f"({' '.join(str(exc).split())[:200]}); restorekit-train checkpoints never do, so this is not one"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise error(f"{path}: not a readable checkpoint, truncated or corrupt ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        what = f"format {ckpt.get('format')!r}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise error(
            f"{path} is not a restorekit-train checkpoint ({what}, expected format {CHECKPOINT_FORMAT!r}); "
            "to publish an authors' checkpoint use `restorekit convert` instead"
        )
    return ckpt


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`restorekit.image.atomic_write`: a kill mid-save leaves the
    previous checkpoint whole. Owner-only (0600), as checkpoints have always been; no fsync (one every few
    hundred steps, each superseded by the next)."""
    from ..image import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f), overwrite=True, mode=0o600, sync=False)
