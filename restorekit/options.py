"""The options every entry point takes, checked in one place and meaning the same everywhere.

:class:`~restorekit.Restorer`, :func:`~restorekit.load_model`, :func:`~restorekit.evaluate.evaluate`,
:func:`~restorekit.weights.resolve` and the ``restorekit`` command (``--device``, ``--dtype``,
``--allow-unpinned``, ``--progress``/``--no-progress``) all go through :func:`run_options`:

- ``device="auto"``: cuda, then mps, then cpu; a device that is not present is a
  :class:`~restorekit.errors.DeviceError` naming the devices that are (:func:`restorekit.devices.pick_device`).
- ``dtype="auto"``: float32, or float16/bfloat16 on an accelerator where the weight record lists it as
  validated; an explicit ``"float32"``, ``"float16"``, ``"bfloat16"`` (or a ``torch.dtype``) must be one the
  record lists.
- ``allow_unpinned=None``: fetch an upstream file that publishes no checksum only when
  ``RESTOREKIT_ALLOW_UNPINNED`` is set; ``True``/``False`` decide regardless of the environment.
- ``progress=None``: progress bars (downloads, tiles, images) on stderr when it is a terminal; ``True`` always,
  ``False`` never.

>>> run_options(device="cpu", dtype="float32").device
device(type='cpu')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .devices import pick_device
from .errors import InputError
from .registry import DTYPE_ALIASES
from .registry import DTYPES as _DTYPE_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from .registry import WeightRecord

__all__ = ["RunOptions", "run_options", "DTYPES"]

# The names a dtype may be given by (registry.DTYPES, then their aliases); each maps to the torch dtype it means.
DTYPES: dict[str, torch.dtype] = {
    **{name: getattr(torch, name) for name in _DTYPE_NAMES},
    **{alias: getattr(torch, name) for alias, name in DTYPE_ALIASES.items()},
}
_CHOICES = "'auto', " + ", ".join(repr(name) for name in _DTYPE_NAMES[:-1]) + f" or {_DTYPE_NAMES[-1]!r}"


@dataclass(frozen=True)
class RunOptions:
    """The checked options: ``device`` is a present ``torch.device``; ``dtype`` is ``"auto"`` or a torch dtype
    (which one runs depends on the model: :meth:`dtype_for`); ``allow_unpinned`` and ``progress`` are
    ``None`` (the environment decides) or a bool."""

    device: torch.device
    dtype: str | torch.dtype = "auto"
    allow_unpinned: bool | None = None
    progress: bool | None = None

    def dtype_for(self, record: WeightRecord | None) -> torch.dtype:
        """The dtype a model runs in on :attr:`device`: half precision only on an accelerator, and only where
        ``record`` lists it as validated (``record=None``, a file without a registered record: ``auto`` is
        float32 and an explicit dtype is taken as given)."""
        if self.dtype == "auto":
            if record is not None and self.device.type in ("cuda", "mps"):
                if "float16" in record.dtypes:
                    return torch.float16
                if "bfloat16" in record.dtypes and self.device.type == "cuda" and torch.cuda.is_bf16_supported():
                    return torch.bfloat16
            return torch.float32
        assert isinstance(self.dtype, torch.dtype)
        name = str(self.dtype).removeprefix("torch.")
        if record is not None and name not in record.dtypes:
            raise InputError(
                f"{record.name} is validated only for {', '.join(record.dtypes)}, not {name}; "
                "use dtype='auto' or 'float32' (CLI: --dtype auto)."
            )
        return self.dtype

    @property
    def bar_disabled(self) -> bool | None:
        """tqdm's ``disable=`` for these options: None (off unless stderr is a terminal), False or True."""
        return None if self.progress is None else not self.progress


def _dtype(dtype: Any) -> str | torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"dtype {dtype} is not one restorekit runs models in; use {_CHOICES}.")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            return "auto"
        if key in DTYPES:
            return DTYPES[key]
    raise InputError(f"Unknown dtype {dtype!r}: use {_CHOICES} (or a torch dtype such as torch.float16).")


def _flag(name: str, value: Any, meaning: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InputError(f"{name} must be True, False or None ({meaning}), not {value!r}")


def run_options(
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    allow_unpinned: bool | None = None,
    progress: bool | None = None,
) -> RunOptions:
    """Check the shared options once and return them as :class:`RunOptions`. Bad values raise a restorekit
    error naming the valid choices (:class:`~restorekit.errors.DeviceError`, :class:`~restorekit.errors.InputError`).
    """
    return RunOptions(
        device=pick_device(device),
        dtype=_dtype(dtype),
        allow_unpinned=_flag("allow_unpinned", allow_unpinned, "None: $RESTOREKIT_ALLOW_UNPINNED decides"),
        progress=_flag("progress", progress, "None: progress bars when stderr is a terminal"),
    )
