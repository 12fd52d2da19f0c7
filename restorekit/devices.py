"""Which devices this machine has, and turning a user's ``device=`` into one of them.

A device that is named but not present (``"cuda"`` on a machine without a GPU, ``"mps"`` off a Mac, a
typo) fails here with a :class:`~restorekit.errors.DeviceError` that lists the devices that *are*
present, instead of with torch's own error half-way through loading a model.
"""

from __future__ import annotations

import torch

from .errors import DeviceError

__all__ = ["available_devices", "pick_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def _accelerator_module(kind: str) -> object | None:
    # torch.xpu, torch.mtia, ...: the other accelerators torch knows follow cuda's is_available/device_count
    module = getattr(torch, kind, None)
    return module if module is not None and callable(getattr(module, "is_available", None)) else None


def available_devices() -> list[str]:
    """Every device restorekit can run on here, e.g. ``['cpu']`` or ``['cpu', 'cuda:0', 'cuda:1']``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    for kind in ("xpu",):
        module = _accelerator_module(kind)
        if module is not None and module.is_available():  # type: ignore[attr-defined]
            count = int(getattr(module, "device_count", lambda: 1)())
            found += [f"{kind}:{i}" for i in range(count)]
    return found


def _refuse(device: object, why: str) -> DeviceError:
    return DeviceError(
        f"device {str(device)!r} {why}; devices on this machine: {', '.join(available_devices())}. "
        "Pass one of those, or device='auto' (cuda, then mps, then cpu)."
    )


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else must name a device that is present.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise _refuse(device, f"is a {type(device).__name__}, not a device name")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise _refuse(device, "is not a device name") from err
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise _refuse(device, "holds no data (meta tensors have shapes only), so nothing can be restored on it")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _refuse(device, "is not available (no CUDA GPU or driver found by torch)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise _refuse(device, f"does not exist (this machine has {count} CUDA device{'s' * (count != 1)})")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise _refuse(device, "is not available (Apple's Metal backend is only on macOS with Apple silicon)")
        return dev
    module = _accelerator_module(dev.type)
    if module is None or not module.is_available():  # type: ignore[attr-defined]
        raise _refuse(device, "is not available here")
    return dev
