"""restorekit: pretrained image-restoration models that run on any image size, on CPU or GPU.

>>> from restorekit import Restorer
>>> Restorer("msrn.sr_x4").run("photo.png", output="photo_x4.png")  # doctest: +SKIP

Importing this package is cheap: torch and the networks load on first use of a public name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["Restorer", "analyze", "list_models", "model_info", "load_model", "__version__"]

_LAZY = {
    "Restorer": ("restorer", "Restorer"),
    "analyze": ("analysis", "analyze"),
    "list_models": ("registry", "list_models"),
    "model_info": ("registry", "model_info"),
    "load_model": ("weights", "load_model"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import analyze
    from .registry import list_models, model_info
    from .restorer import Restorer
    from .weights import load_model


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: `import restorekit` must not import torch or build anything.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'restorekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
