"""The feeding contract: what a network is given besides the image, and the one place that packs it.

An architecture declares what its networks are conditioned on, :meth:`ArchSpec.condition_for(config)
<restorekit.registry.ArchSpec.condition_for>` (spatial_rnn's ``condition`` parameter chooses it), and the multiple
its input sides must divide by, :attr:`ArchSpec.size_multiple <restorekit.registry.ArchSpec.size_multiple>`.
:class:`Feeding` holds them, with the value range, for one network config; the Restorer, the trainer and the
training data all turn an image (and its mask) into the network's input, and the output back, through it:

- condition ``None``: the image alone, (N, C, H, W) at the architecture's value range;
- ``"mask"`` (inpainting): the image, then one mask channel, 1 where the pixel is known and 0 where it is to be
  filled (what the image holds there does not matter: the network sees mid-grey);
- ``"hints"`` (colourisation): the image (the grey image with the known colours pasted in, as
  :meth:`restorekit.degrade.Degradation.with_mask` builds it), then one mask channel, 1 where its colour is known.

The mask channel stays in [0, 1] whatever the value range. What a network builds from the image and its mask
inside (spatial_rnn's extra channels) is its own business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError
from .registry import CONDITIONS, ArchSpec

__all__ = ["CONDITIONS", "Feeding", "pack"]


def pack(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """An (N, C, H, W) image and its (N or 1, 1, H, W) mask as one tensor, the mask channel after the image's: the
    layout of a conditioned network's input and of a training sample (:meth:`Feeding.split` undoes it). Without a
    mask, ``x`` itself."""
    if mask is None:
        return x
    return torch.cat([x, mask.expand(x.shape[0], -1, -1, -1)], 1)


@dataclass(frozen=True)
class Feeding:
    """How one network is fed: its condition (None, ``"mask"``, ``"hints"``), value range and size multiple.

    >>> f = Feeding("mask")
    >>> f.to_network(torch.ones(2, 3, 4, 4), torch.zeros(1, 1, 4, 4)).shape
    torch.Size([2, 4, 4, 4])
    """

    condition: str | None = None
    value_range: float = 1.0  # the network's input/output range (MSRN works in 0..255)
    size_multiple: int = 1  # input sides must divide by it

    def __post_init__(self) -> None:
        if self.condition is not None and self.condition not in CONDITIONS:
            raise ValueError(f"condition must be None or one of {CONDITIONS}, not {self.condition!r}")

    @classmethod
    def of(cls, spec: ArchSpec, config: Mapping[str, Any]) -> Feeding:
        """The feeding of ``spec``'s network built from ``config`` (over the defaults)."""
        return cls(spec.condition_for(config), float(spec.value_range), int(spec.size_multiple))

    @property
    def mask_channels(self) -> int:
        """Input channels after the image's: 1 (the mask) for a conditioned network, else 0."""
        return 0 if self.condition is None else 1

    def to_range(self, x: torch.Tensor) -> torch.Tensor:
        """An image in [0, 1] at the network's value range (the image part of its input; a training target)."""
        return x * self.value_range if self.value_range != 1 else x

    def to_network(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) image in [0, 1] and its (N or 1, 1, H, W) mask -> the network's input: the image at the value
        range, then the mask (:func:`pack`). A conditioned network needs the mask; any other takes none."""
        if (mask is None) != (self.condition is None):
            what = f"a {self.condition} network needs its mask" if mask is None else "this network takes no mask"
            raise InputError(f"{what}: (image, mask) must match the network's condition ({self.condition})")
        return pack(self.to_range(x), mask)

    def split(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A packed (N, C + mask channels, H, W) tensor (a training batch) -> (image, mask or None)."""
        if not self.mask_channels:
            return t, None
        c = t.shape[1] - self.mask_channels
        return t[:, :c], t[:, c:]

    def from_network(self, y: torch.Tensor) -> torch.Tensor:
        """The network's output image (selected: :attr:`ArchSpec.select_output`) back in [0, 1] units, unclamped."""
        return y / self.value_range if self.value_range != 1 else y
