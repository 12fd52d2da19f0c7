"""Colour spaces on float tensors: ITU-R BT.601 YCbCr (as MATLAB's ``rgb2ycbcr``) and grey.

Every function takes ``(..., 3, H, W)`` floating-point tensors in ``[0, 1]`` on any device, keeps their
dtype and device, and neither rounds nor clamps. The coefficients are public so that code measuring in
other units (:mod:`restorekit.metrics` works in 0..255 levels) uses the very same numbers.

>>> x = torch.rand(1, 3, 8, 8)
>>> bool((ycbcr_to_rgb(rgb_to_ycbcr(x)) - x).abs().max() < 1e-5)
True
"""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["YCBCR_MATRIX", "YCBCR_OFFSET", "GREY_WEIGHTS", "rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_grey"]

# ITU-R BT.601 studio swing, as MATLAB's rgb2ycbcr on double images: rows give Y, Cb, Cr (x 255).
_BT601 = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
YCBCR_MATRIX: tuple[tuple[float, float, float], ...] = tuple(tuple(v / 255.0 for v in row) for row in _BT601)
"""Rows Y, Cb, Cr of :func:`rgb_to_ycbcr` for RGB in [0, 1] (Y = row 0 . RGB + offset 0: 16-235 of 255)."""
YCBCR_OFFSET: tuple[float, float, float] = (16.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
"""What :func:`rgb_to_ycbcr` adds to Y, Cb, Cr, in [0, 1] units."""
GREY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""BT.601 luma weights of R, G, B: :func:`rgb_to_grey`, as Pillow's "L"."""

_YCC_MATRIX = torch.tensor(YCBCR_MATRIX, dtype=torch.float64)
_YCC_OFFSET = torch.tensor(YCBCR_OFFSET, dtype=torch.float64)
_YCC_INVERSE = torch.linalg.inv(_YCC_MATRIX)  # float64 once, so the inverse is exact to float rounding
_GREY_WEIGHTS = torch.tensor(GREY_WEIGHTS, dtype=torch.float64)


def _check_three_channels(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 3 or x.shape[-3] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} needs a floating-point tensor of shape (..., 3, H, W), got {shape}")


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x.device, x.dtype), x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) in [0, 1] -> BT.601 studio-swing Y, Cb, Cr in [0, 1] units (MATLAB ``rgb2ycbcr``)."""
    _check_three_channels(x, "rgb_to_ycbcr")
    return _mix(_YCC_MATRIX, x) + _YCC_OFFSET.to(x.device, x.dtype)[:, None, None]


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr` (no rounding, no clamping)."""
    _check_three_channels(x, "ycbcr_to_rgb")
    return _mix(_YCC_INVERSE, x - _YCC_OFFSET.to(x.device, x.dtype)[:, None, None])


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) -> luma (..., 1, H, W) with BT.601 weights 0.299/0.587/0.114, as Pillow's "L"."""
    _check_three_channels(x, "rgb_to_grey")
    return torch.einsum("j,...jhw->...hw", _GREY_WEIGHTS.to(x.device, x.dtype), x).unsqueeze(-3)
