"""Checkpoint files of ``restorekit-train``: where a run keeps them, the ``restorekit-train/1`` format, read safely,
written atomically.

A run folder holds ``checkpoints/step_{N:08d}.pt`` and ``checkpoints/last.pt`` (:func:`save_checkpoint`). The loop
writes and resumes from them (:mod:`restorekit.train.loop`) and export reads them (:mod:`restorekit.train.publish`,
through :func:`find_checkpoint` and :func:`load_checkpoint`); both come here, so neither imports the other for this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import RestorekitError

__all__ = [
    "CHECKPOINT_FORMAT",
    "REQUIRED_KEYS",
    "TrainingError",
    "checkpoint_path",
    "find_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "atomic_save",
]

REQUIRED_KEYS = ("format", "step", "arch", "model_name", "config", "model")  # what export and resume read first
_FOLDER = "checkpoints"
_LAST = "last.pt"

CHECKPOINT_FORMAT = "restorekit-train/1"


class TrainingError(RestorekitError):
    """A checkpoint that does not match the run, or a run that cannot continue."""


def checkpoint_path(run: str | os.PathLike[str], step: int | None = None) -> Path:
    """``<run>/checkpoints/step_{step:08d}.pt``, or ``<run>/checkpoints/last.pt`` for ``step=None``."""
    name = _LAST if step is None else f"step_{int(step):08d}.pt"
    return Path(run) / _FOLDER / name


def find_checkpoint(
    run: str | os.PathLike[str],
    checkpoint: str | int | os.PathLike[str] = "last",
    *,
    error: type[RestorekitError] | None = None,
) -> Path:
    """The existing checkpoint file of run folder ``run``: ``"last"``, a step number, or a ``.pt`` path (absolute, or
    relative to the working folder or to ``<run>/checkpoints``). ``error`` (default :class:`TrainingError`) is
    raised, naming the checkpoints the run has, when there is no such file."""
    error = error or TrainingError
    run = Path(run)
    if not run.is_dir():
        raise error(
            f"run folder {run} does not exist (or is not a folder); pass the folder `restorekit-train fit` wrote "
            "(it holds config.json, log.jsonl and checkpoints/)"
        )
    folder = run / _FOLDER
    if isinstance(checkpoint, os.PathLike) or (isinstance(checkpoint, str) and checkpoint.endswith(".pt")):
        path = Path(checkpoint)
        path = path if path.is_absolute() or path.exists() else folder / path
    elif str(checkpoint) == "last":
        path = checkpoint_path(run)
    elif str(checkpoint).isdigit():
        path = checkpoint_path(run, int(checkpoint))
    else:
        raise error(f"checkpoint must be 'last', a step number or a .pt path, not {checkpoint!r}")
    if not path.is_file():
        # not the hidden ".<name>.<random>.tmp.pt" of a save cut short
        have = sorted(p.name for p in folder.glob("[!.]*.pt")) if folder.is_dir() else []
        raise error(
            f"checkpoint {path} does not exist; {run} has: {', '.join(have) or 'no checkpoints'} "
            "(pass --checkpoint last, a step number, or a file)"
        )
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    error: type[RestorekitError] | None = None,
) -> dict[str, Any]:
    """Read a ``restorekit-train/1`` checkpoint (``weights_only``: no code runs) that has every
    :data:`REQUIRED_KEYS` entry; ``error`` (default :class:`TrainingError`) is raised on failure."""
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
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise error(f"{path}: checkpoint lacks {', '.join(missing)}; it was not written by restorekit-train")
    return ckpt


def save_checkpoint(state: dict[str, Any], run: str | os.PathLike[str]) -> Path:
    """Write ``state`` as the run's ``step_{N:08d}.pt`` (``N = state["step"]``) and as its ``last.pt``, each
    atomically; returns the step file."""
    path = checkpoint_path(run, int(state["step"]))
    atomic_save(state, path)
    atomic_save(state, checkpoint_path(run))
    return path


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`restorekit.image.atomic_write`: a kill mid-save leaves the
    previous checkpoint whole. Owner-only (0600), as checkpoints have always been; no fsync (one every few
    hundred steps, each superseded by the next)."""
    from ..image import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f), overwrite=True, mode=0o600, sync=False)
