"""PSNR and SSIM with every convention named.

A PSNR is only comparable with another measured the same way: which channel (RGB, or the Y of
ITU-R BT.601 as MATLAB's ``rgb2ycbcr``), how many border pixels are shaved, whether the images are
first rounded to 8 bits (as a saved PNG is), and the peak value. A :class:`Convention` names all
of them, and the presets below are the ones published tables use:

* :func:`SR` (``"y_shave_scale"``): the Y channel (16-235 studio swing, in [0, 1] units, computed in
  floating point from the 8-bit RGB, not rounded again), ``scale`` pixels shaved from each border, both
  images rounded to 8 bits first. A grey image is measured by its raw grey values (``grey="raw"``, what
  the usual MATLAB code does: it calls ``rgb2ycbcr`` only on 3-channel images); ``grey="as_rgb"`` takes
  its Y as if it were RGB with three equal channels, which compresses it to 16-235 and raises its PSNR
  by 20 log10(255/219) = 1.32 dB (Set14's img_003: +0.09 dB on the Set14 mean). See docs/evaluation.md.
* :data:`DENOISE` (``"full_image"``): the channels as they are (grey stays grey, colour is RGB), the full
  image, no rounding, peak 1 -- the Gaussian-denoising benchmarks' protocol (BSD68, Set12), where noisy
  inputs are neither clipped nor rounded.
* :data:`JPEG` (``"y_full"``): Y of colour images (grey images as they are), the full image, rounded to 8 bits.

SSIM is Wang, Bovik, Sheikh & Simoncelli (2004) as their reference MATLAB ``ssim_index``: an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = peak, statistics over the 'valid' region only
(no padding, no downsampling), the mean of the SSIM map; colour images average their channels.

Every function takes batched (N, C, H, W) tensors with values in [0, peak], on any device, and returns
one value per image; the dataset figure is the mean of the per-image values.

>>> x = torch.rand(2, 3, 32, 32); y = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
>>> psnr(x, y, SR(2)).shape
torch.Size([2])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import torch

from .color import YCBCR_MATRIX, YCBCR_OFFSET
from .errors import InputError

__all__ = ["Convention", "SR", "DENOISE", "JPEG", "FULL", "get_convention", "prepare", "psnr", "ssim"]

_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


@dataclass(frozen=True)
class Convention:
    """How two images are compared. ``name`` is what tables and the registry's ``Metric.convention`` print."""

    name: str
    color: Literal["rgb", "y"] = "rgb"  # "rgb": channels as given; "y": BT.601 Y (MATLAB rgb2ycbcr, 16-235)
    crop: int = 0  # pixels shaved from every border before measuring
    quantize: bool = False  # round both images to 8 bits (clamp to [0, peak], round half up) first
    peak: float = 1.0  # the maximum signal value, in the images' units ([0, 1] images: 1)
    grey: Literal["as_rgb", "raw"] = "raw"  # for color="y": a 1-channel image's Y as if RGB, or its raw values

    def __post_init__(self) -> None:
        if self.color not in ("rgb", "y"):
            raise InputError(f"Convention.color must be 'rgb' or 'y', got {self.color!r}")
        if self.grey not in ("as_rgb", "raw"):
            raise InputError(f"Convention.grey must be 'as_rgb' or 'raw', got {self.grey!r}")
        if self.crop < 0 or int(self.crop) != self.crop:
            raise InputError(f"Convention.crop must be a non-negative integer, got {self.crop!r}")
        if not self.peak > 0:
            raise InputError(f"Convention.peak must be positive, got {self.peak!r}")

    def describe(self) -> str:
        """One line naming every choice, e.g. for the foot of a results table."""
        if self.color == "y":
            chan = "Y (BT.601, MATLAB rgb2ycbcr 16-235)"
            chan += ", grey images as RGB" if self.grey == "as_rgb" else ", grey images as their raw values"
        else:
            chan = "channels as given (RGB or grey)"
        crop = f"shave {self.crop} px per border" if self.crop else "full image"
        quant = "rounded to 8 bits" if self.quantize else "not rounded"
        return f"{self.name}: {chan}, {crop}, {quant}, peak {self.peak:g}"


def SR(scale: int, *, grey: Literal["as_rgb", "raw"] = "raw") -> Convention:
    """The super-resolution convention: Y, ``scale`` pixels shaved per border, 8-bit rounded."""
    return Convention("y_shave_scale", color="y", crop=int(scale), quantize=True, grey=grey)


DENOISE = Convention("full_image")
FULL = DENOISE
JPEG = Convention("y_full", color="y", quantize=True, grey="raw")

_PRESETS = {"y_shave_scale": SR, "full_image": DENOISE, "y_full": JPEG}


def get_convention(name: str, scale: int = 1) -> Convention:
    """A preset by name (``y_shave_scale`` takes ``scale``); ``y_shave_scale:as_rgb`` takes grey images' Y as RGB."""
    base, _, option = name.partition(":")
    if base not in _PRESETS or option not in ("", "raw", "as_rgb"):
        raise InputError(
            f"unknown metric convention {name!r}; use one of {', '.join(_PRESETS)} (y_shave_scale:as_rgb takes the "
            "Y of grey images as if they were RGB)"
        )
    preset = _PRESETS[base]
    conv = preset(scale) if callable(preset) else preset
    if option:
        conv = replace(conv, grey=option)
    return conv


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    for t in (x, y):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"metrics need float (N, C, H, W) tensors, got {shape}; add a batch dimension")
    if x.shape != y.shape:
        raise InputError(
            f"metrics compare images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}; "
            "crop the target to the output (for SR, modcrop the HR image to the scale)"
        )


def prepare(x: torch.Tensor, convention: Convention) -> torch.Tensor:
    """Apply ``convention`` to a (N, C, H, W) batch: border shave, 8-bit rounding, channel choice.

    The result is float32 (float64 stays float64) with values in [0, peak]: what PSNR and SSIM compare.
    (Every step is pixel-wise, so shaving first gives the same result with less work.)
    """
    x = x.double() if x.dtype == torch.float64 else x.float()
    b = convention.crop
    if b:
        if x.shape[-2] <= 2 * b or x.shape[-1] <= 2 * b:
            raise InputError(f"a {x.shape[-2]}x{x.shape[-1]} image is too small to shave {b} px from each border")
        x = x[..., b:-b, b:-b]
    c = x.shape[1]
    to_y = convention.color == "y" and (c == 3 or convention.grey == "as_rgb")
    if convention.color == "y" and c not in (1, 3):
        raise InputError(f"convention {convention.name!r} measures Y of 1- or 3-channel images, got {c} channels")
    # Work in units of 8-bit levels (0..255) so that rounding and the Y matrix need no extra passes.
    levels = 255.0 / convention.peak
    x = x * levels
    if convention.quantize:
        x = x.add_(0.5).floor_().clamp_(0, 255)
    if to_y:
        # The Y row of color.rgb_to_ycbcr (MATLAB rgb2ycbcr), applied to 0..255 values.
        w = YCBCR_MATRIX[0]
        off = YCBCR_OFFSET[0] * 255
        if c == 1:
            x = x * sum(w) + off
        else:
            x = (x[:, 0:1] * w[0]).add_(x[:, 1:2], alpha=w[1]).add_(x[:, 2:3], alpha=w[2]).add_(off)
    return x.div_(levels)


def _chunks(x: torch.Tensor) -> int:
    """Images per chunk: on the CPU about one 512x512 image at a time (cache-sized, several times faster than
    whole-batch passes over memory); on an accelerator the whole batch."""
    if x.device.type != "cpu":
        return max(1, x.shape[0])
    return max(1, (1 << 18) // max(1, x.shape[-2] * x.shape[-1]))


def psnr(x: torch.Tensor, y: torch.Tensor, convention: Convention = DENOISE) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``10 log10(peak^2 / MSE)``: a (N,) tensor (inf where equal)."""
    _check_pair(x, y)
    out = []
    step = _chunks(x)
    for i in range(0, x.shape[0], step):
        a, b = prepare(x[i : i + step], convention), prepare(y[i : i + step], convention)
        mse = a.sub_(b).pow_(2).flatten(1).mean(1)
        out.append(10 * torch.log10(convention.peak**2 / mse))
    return torch.cat(out)


@functools.lru_cache(maxsize=8)
def _gauss_1d() -> tuple[float, ...]:
    # fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D window with itself.
    t = torch.arange(_WINDOW, dtype=torch.float64) - (_WINDOW - 1) / 2
    g = torch.exp(-(t * t) / (2 * _SIGMA**2))
    return tuple((g / g.sum()).tolist())


def _filter_valid(z: torch.Tensor) -> torch.Tensor:
    """Separable 11x11 Gaussian filter over the 'valid' region of (..., H, W), as 2 x 11 shifted multiply-adds
    (faster than a grouped convolution on the CPU, and exact to float rounding)."""
    g = _gauss_1d()
    h = z.shape[-2] - _WINDOW + 1
    rows = z[..., 0:h, :] * g[0]
    for k in range(1, _WINDOW):
        rows.add_(z[..., k : k + h, :], alpha=g[k])
    w = z.shape[-1] - _WINDOW + 1
    out = rows[..., 0:w] * g[0]
    for k in range(1, _WINDOW):
        out.add_(rows[..., k : k + w], alpha=g[k])
    return out


def ssim(x: torch.Tensor, y: torch.Tensor, convention: Convention = DENOISE) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, reference ``ssim_index``): a (N,) tensor."""
    _check_pair(x, y)
    out = []
    step = _chunks(x)
    for i in range(0, x.shape[0], step):
        out.append(_ssim(prepare(x[i : i + step], convention), prepare(y[i : i + step], convention), convention.peak))
    return torch.cat(out)


def _ssim(a: torch.Tensor, b: torch.Tensor, peak: float) -> torch.Tensor:
    if a.shape[-2] < _WINDOW or a.shape[-1] < _WINDOW:
        raise InputError(
            f"SSIM needs at least {_WINDOW}x{_WINDOW} pixels after the border shave, got {a.shape[-2]}x{a.shape[-1]}"
        )
    c = a.shape[1]
    c1, c2 = (_K1 * peak) ** 2, (_K2 * peak) ** 2
    stats = _filter_valid(torch.cat([a, b, a * a, b * b, a * b], 1))
    mu_a, mu_b, aa, bb, ab = stats.split(c, 1)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    num = (2 * mu_ab + c1) * (2 * (ab - mu_ab) + c2)
    den = (mu_aa + mu_bb + c1) * (aa - mu_aa + bb - mu_bb + c2)
    return (num / den).flatten(1).mean(1)
