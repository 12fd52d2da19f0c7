"""Classical filters: L0 gradient minimisation (the ``spatial_rnn.smooth_l0`` training target).

Xu, Lu, Xu, Jia, "Image Smoothing via L0 Gradient Minimization", SIGGRAPH Asia 2011. The smoothed
image S minimises ``|S - I|^2 + lambda * #{p : grad S(p) != 0}`` (the count of pixels with a non-zero
gradient, colour channels counted together). The solver alternates, for beta = 2 lambda, 2 kappa lambda,
... up to ``beta_max``:

- auxiliary gradients (h, v) = the circular forward differences of S, set to zero wherever
  ``sum over channels (h^2 + v^2) < lambda / beta``;
- S = the exact minimiser of ``|S - I|^2 + beta |grad S - (h, v)|^2``, solved in the Fourier domain
  (periodic boundaries): ``F(S) = (F(I) + beta F(div*)) / (1 + beta (|F(dx)|^2 + |F(dy)|^2))``.

This module is restorekit's own implementation in torch (real FFTs, any batch and channel count, CPU
or GPU). ``L0Smooth`` runs it over image files with the same batch machinery as ``restorekit run``::

    restorekit run l0smooth photo.png -o smoothed/ --lam 0.02
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError

__all__ = ["l0_smooth", "L0Smooth", "FILTERS", "parse_filter"]


def l0_smooth(
    x: torch.Tensor,
    lam: float = 0.02,
    *,
    kappa: float = 2.0,
    beta_max: float = 1e5,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """L0 gradient-minimisation smoothing of a (N, C, H, W) or (C, H, W) image in [0, 1].

    ``lam`` weighs the number of non-zero gradients (larger = flatter; the paper's examples use 0.01-0.05),
    ``kappa`` > 1 is the rate beta grows by, ``beta_max`` ends the schedule. Computes in ``dtype``
    (default: float32 for float16/bfloat16/float32 inputs, else the input's) and returns the input's dtype.
    The result is not clamped (the exact solver can overshoot [0, 1] by a little at strong edges).
    """
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise InputError(f"l0_smooth takes a (N, C, H, W) or (C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not lam > 0 or not kappa > 1 or not beta_max > 2 * lam:
        raise InputError(f"l0_smooth needs lam > 0, kappa > 1 and beta_max > 2 lam; got {lam}, {kappa}, {beta_max}")
    squeeze = x.ndim == 3
    img = x[None] if squeeze else x
    work = dtype or (torch.float32 if img.dtype in (torch.float16, torch.bfloat16, torch.float32) else img.dtype)
    s = img.to(work)
    h, w = s.shape[-2:]
    # |F(d)|^2 of the forward difference [1, -1] on a periodic grid of n samples: 2 - 2 cos(2 pi k / n).
    ky = torch.arange(h, device=s.device, dtype=torch.float64)
    kx = torch.arange(w // 2 + 1, device=s.device, dtype=torch.float64)
    grad_power = (2 - 2 * torch.cos(2 * math.pi * ky / h))[:, None] + (2 - 2 * torch.cos(2 * math.pi * kx / w))[None]
    grad_power = grad_power.to(work)
    f_img = torch.fft.rfft2(s)
    beta = 2 * lam
    while beta < beta_max:
        dh = torch.roll(s, -1, -1) - s  # S(y, x+1) - S(y, x), wrapping at the border
        dv = torch.roll(s, -1, -2) - s
        flat = (dh.square() + dv.square()).sum(1, keepdim=True) < lam / beta
        dh = dh.masked_fill(flat, 0)
        dv = dv.masked_fill(flat, 0)
        # The adjoint of the forward difference applied to (h, v): h(x-1) - h(x) + v(y-1) - v(y).
        div = torch.roll(dh, 1, -1) - dh + torch.roll(dv, 1, -2) - dv
        s = torch.fft.irfft2((f_img + beta * torch.fft.rfft2(div)) / (1 + beta * grad_power), s=(h, w))
        beta *= kappa
    out = s.to(img.dtype)
    return out[0] if squeeze else out


def iterations(lam: float = 0.02, kappa: float = 2.0, beta_max: float = 1e5) -> int:
    """How many (h, v) / S alternations the schedule runs (22 for the defaults)."""
    n, beta = 0, 2 * lam
    while beta < beta_max:
        n, beta = n + 1, beta * kappa
    return n


@dataclass(frozen=True)
class _FilterRecord:
    """The little of a :class:`~restorekit.registry.WeightRecord` that the batch runner shows."""

    name: str
    scale: int = 1


class L0Smooth:
    """``restorekit run l0smooth``: L0 smoothing of image files, keeping alpha, bit depth and format.

    Has the ``record.name`` / ``condition`` / ``run(src, output, overwrite=)`` surface of a
    :class:`~restorekit.restorer.Restorer` (:class:`restorekit.batch.ImageToImage`), so
    :func:`restorekit.batch.run_batch` drives it unchanged; it takes no mask (``condition`` None).
    Colour images are smoothed as RGB (gradients counted over the three channels together), grey ones
    as grey; the result is clamped to [0, 1] before it is written.
    """

    condition: str | None = None  # nothing besides the image

    def __init__(self, lam: float = 0.02, kappa: float = 2.0, beta_max: float = 1e5, device: str = "cpu") -> None:
        l0_smooth(torch.zeros(1, 1, 2, 2), lam, kappa=kappa, beta_max=beta_max)  # validates the parameters
        self.lam, self.kappa, self.beta_max = float(lam), float(kappa), float(beta_max)
        from .restorer import pick_device

        self.device = pick_device(device)
        self.record = _FilterRecord(f"l0smooth (lambda {self.lam:g})")

    def __repr__(self) -> str:
        return f"L0Smooth(lam={self.lam:g}, kappa={self.kappa:g}, beta_max={self.beta_max:g})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (C, H, W) in [0, 1] -> smoothed, clamped to [0, 1], on the input's device."""
        y = l0_smooth(x.to(self.device), self.lam, kappa=self.kappa, beta_max=self.beta_max)
        return y.clamp(0, 1).to(x.device)

    def run(
        self,
        x: Any,
        output: str | os.PathLike | None = None,
        *,
        overwrite: bool = True,
        mask: Any = None,
        input_range: tuple[float, float] | None = None,
    ) -> Any:
        """Smooth an image file (written to ``output`` when given) or a tensor. ``input_range``: the range of a
        float file's values when it is not [0, 1] (as :meth:`Restorer.run`). The filter takes no ``mask``."""
        from .restorer import restore_file

        if mask is not None:
            raise InputError(f"{self.record.name} takes no mask; drop mask= (--mask) for this filter")

        if isinstance(x, torch.Tensor):
            return self(x)
        if not isinstance(x, (str, os.PathLike)):
            raise InputError(f"L0Smooth.run takes a path or a tensor, not {type(x).__name__}")
        from .restorer import check_unit_range

        def smooth(p: Any) -> Any:
            # A float TIFF in 0..255 would be smoothed as if it were mostly white: refused, as the Restorer does.
            rng = input_range if p.bit_depth == 32 else None
            return dataclasses.replace(p, color=self(check_unit_range(p.color, str(x), rng)))

        return restore_file(x, output, smooth, overwrite)


# Filters that can stand in for a reference image (``restorekit eval --target l0smooth:0.02``) or run on
# files (``restorekit run l0smooth``): name -> (positional parameter, constructor, parameter types).
FILTERS: dict[str, tuple[str, type[L0Smooth], dict[str, type]]] = {
    "l0smooth": ("lam", L0Smooth, {"lam": float, "kappa": float, "beta_max": float}),
}


def parse_filter(spec: str, device: str = "cpu") -> L0Smooth:
    """``"l0smooth"``, ``"l0smooth:0.02"`` or ``"l0smooth:lam=0.02,kappa=2"`` -> a filter object."""
    from .specs import parse_params

    name, params = parse_params(spec, FILTERS, "filter")
    return FILTERS[name][1](**params, device=device)
