"""``restorekit-train``: train and fine-tune every restorekit architecture, on one process or many, then export
and publish the weights (:mod:`restorekit.train.publish`).

>>> from restorekit.train import TrainConfig, fit               # doctest: +SKIP
>>> cfg = TrainConfig.from_preset("spatial_rnn.denoise", data=["my_photos/"], out="runs/mine", steps=2000)
>>> fit(cfg)                                                      # doctest: +SKIP

Importing this package is cheap: the loop, data pipeline and losses load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "PRESETS", "preset", "fit", "CHECKPOINT_FORMAT"]


def __getattr__(name: str) -> Any:
    if name == "CHECKPOINT_FORMAT":
        from .checkpoint import CHECKPOINT_FORMAT

        return CHECKPOINT_FORMAT
    if name in ("TrainConfig", "PRESETS", "preset"):
        from . import config

        return getattr(config, name)
    if name == "fit":
        from .loop import fit

        return fit
    raise AttributeError(f"module 'restorekit.train' has no attribute {name!r}")
