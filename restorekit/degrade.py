"""Synthetic degradations, seeded and reproducible, shared by evaluation and training.

Every function takes a float (N, C, H, W) batch with values in [0, 1] (C = 1 grey or 3 RGB) on any
device and returns a new tensor; none modifies its input. Randomness comes only from ``seed``: an
``int``, a ``torch.Generator`` (advanced by the call, so a training loop can draw from one stream), or
``None`` for torch's global generator. Random numbers are drawn on the CPU and moved to the data's device,
so a seed gives the same degradation on CPU and GPU. Each image of a batch gets its own draws.

========================  ==============================================================================
:func:`gaussian_noise`    ``x + N(0, (sigma/255)^2)``; ``sigma`` is on the 0-255 scale (25 means 25/255 on
                          [0, 1] images); optionally clipped to [0, 1] and/or rounded to 8 bits
:func:`jpeg`              JPEG at quality q with Pillow (libjpeg's standard tables); grey stays grey
:func:`bicubic_downsample`  MATLAB ``imresize(x, 1/scale)`` (:mod:`restorekit.resize`)
:func:`gaussian_blur`     fixed isotropic sigma, or a random (anisotropic) Gaussian kernel per image
:func:`motion_blur`       a random camera-shake trajectory kernel per image
:func:`rain`              synthetic rain streaks added to the image (``O = B + S``, clipped)
:func:`haze`              atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)``
:func:`mask_pixels`       random pixel masks for inpainting: (masked image, mask)
:func:`color_hints`      sparse colour hints for colourisation: (grey, hints, mask)
========================  ==============================================================================

:func:`parse` turns a short spec such as ``"noise:25"``, ``"jpeg:10"`` or ``"bicubic:4"`` into a
:class:`Degradation` that the evaluation runner applies to clean images. The masked specs ``"mask:0.5"``
(inpainting: the fraction of pixels missing, default 0.5) and ``"hints:0.03"`` (colourisation: the fraction
with known colour, default 0.03) mean what they mean in training; :meth:`Degradation.with_mask` gives the
network input and its mask.

>>> x = torch.rand(2, 3, 32, 32)
>>> noisy = gaussian_noise(x, 25, seed=0)
>>> torch.equal(noisy, gaussian_noise(x, 25, seed=0))
True
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import rgb_to_grey
from .errors import InputError
from .resize import imresize
from .specs import Range, parse_params  # the grammar's home; parse_params is importable from here as before

__all__ = [
    "Seed",
    "generator",
    "gaussian_noise",
    "jpeg",
    "bicubic_downsample",
    "gaussian_kernel",
    "random_gaussian_kernel",
    "motion_kernel",
    "blur",
    "gaussian_blur",
    "motion_blur",
    "rain",
    "random_depth",
    "haze",
    "random_mask",
    "mask_pixels",
    "color_hints",
    "Degradation",
    "parse",
    "parse_ranged",
    "RANGED",
    "ODD",
]

Seed = int | torch.Generator | None


def generator(seed: Seed) -> torch.Generator | None:
    """A CPU generator for ``seed``: a new one for an int, the same object for a generator, None for None."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    return torch.Generator().manual_seed(int(seed) % (1 << 63))


def _check(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} needs a float (N, C, H, W) tensor in [0, 1] with C = 1 or 3, got {shape}")


def _randn(shape: tuple[int, ...], gen: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(like.device, like.dtype)


def _uniform(gen: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _range(value: float | tuple[float, float]) -> tuple[float, float]:
    return (float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


def _quantize8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).add_(0.5).floor_().div_(255)


# ----------------------------------------------------------------------------------------------- noise


def gaussian_noise(
    x: torch.Tensor, sigma: float, *, seed: Seed = None, clip: bool = False, quantize: bool = False
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma``/255 (``sigma`` on the 0-255 scale).

    ``clip=False`` (the denoising benchmarks' protocol) leaves values outside [0, 1]; ``clip=True`` clamps;
    ``quantize=True`` also rounds to 8 bits (clamping, as saving to PNG would).
    """
    _check(x, "gaussian_noise")
    if sigma < 0:
        raise InputError(f"sigma must be >= 0 (on the 0-255 scale), got {sigma}")
    y = x + _randn(tuple(x.shape), generator(seed), x) * (sigma / 255.0)
    if quantize:
        return _quantize8(y)
    return y.clamp(0, 1) if clip else y


# ------------------------------------------------------------------------------------------------ JPEG


def jpeg(x: torch.Tensor, quality: int, *, subsampling: str = "4:2:0") -> torch.Tensor:
    """Compress each image to JPEG at ``quality`` (1-100) with Pillow and decode it; the result is 8-bit.

    Grey images are coded as grey JPEGs (the literature's protocol: MATLAB ``imwrite`` of the Y or grey
    image, same IJG quantisation tables as Pillow's libjpeg); colour images as YCbCr JPEGs with
    ``subsampling`` ``"4:2:0"`` (libjpeg's default), ``"4:2:2"`` or ``"4:4:4"``.
    """
    _check(x, "jpeg")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise InputError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}")
    if subsampling not in ("4:2:0", "4:2:2", "4:4:4"):
        raise InputError(f"subsampling must be '4:2:0', '4:2:2' or '4:4:4', got {subsampling!r}")
    pixels = _quantize8(x.detach().float().cpu()).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for arr in pixels:
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        buf = io.BytesIO()
        options = {} if img.mode == "L" else {"subsampling": subsampling}
        img.save(buf, format="JPEG", quality=int(quality), **options)
        buf.seek(0)
        with Image.open(buf) as decoded:
            back = np.asarray(decoded.convert(img.mode))
        out.append(torch.from_numpy(back.reshape(arr.shape).copy()))
    y = torch.stack(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255
    return y


# ---------------------------------------------------------------------------------------------- resize


def bicubic_downsample(x: torch.Tensor, scale: int, *, quantize: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, 1/scale, 'bicubic')``; H and W must be multiples of ``scale`` (modcrop first).

    ``quantize=True`` (default) emulates MATLAB on uint8 images (rounded after each pass), as the published
    LR files were made; the result is clamped to [0, 1] either way.
    """
    _check(x, "bicubic_downsample")
    if int(scale) != scale or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise InputError(
            f"a {h}x{w} image is not a multiple of the scale {scale}; crop it first (x[..., :h - h % s, :w - w % s])"
        )
    return imresize(x, 1 / scale, quantize=quantize).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ blur


def gaussian_kernel(size: int, sigma: float | tuple[float, float], theta: float = 0.0) -> torch.Tensor:
    """A normalised (size, size) float64 Gaussian kernel; ``sigma`` may be (along, across) rotated by ``theta`` rad."""
    if size < 1 or size % 2 == 0:
        raise InputError(f"kernel size must be a positive odd integer, got {size}")
    s1, s2 = _range(sigma)
    if s1 <= 0 or s2 <= 0:
        raise InputError(f"sigma must be positive, got {sigma}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2))
    return k / k.sum()


def random_gaussian_kernel(
    size: int = 21,
    *,
    sigma: tuple[float, float] = (0.2, 4.0),
    anisotropic: bool = True,
    seed: Seed = None,
) -> torch.Tensor:
    """A Gaussian kernel with sigma(s) uniform in ``sigma`` and, if anisotropic, a uniform random angle."""
    gen = generator(seed)
    s1 = _uniform(gen, *sigma)
    if not anisotropic:
        return gaussian_kernel(size, s1)
    s2 = _uniform(gen, *sigma)
    return gaussian_kernel(size, (s1, s2), _uniform(gen, 0.0, math.pi))


def _splat(points: torch.Tensor, size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear splatting of (P, 2) (row, col) points, centred on the kernel, into a (size, size) grid."""
    k = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    p = points + size // 2
    w = torch.ones(len(points), dtype=torch.float64) if weights is None else weights
    r0, c0 = p[:, 0].floor(), p[:, 1].floor()
    fr, fc = p[:, 0] - r0, p[:, 1] - c0
    r0, c0 = r0.long().clamp(0, size - 1), c0.long().clamp(0, size - 1)
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        k.index_put_((r0 + dr, c0 + dc), w * wt, accumulate=True)
    return k[:size, :size]


def motion_kernel(size: int = 21, *, seed: Seed = None, steps: int = 64, shake: float = 0.3) -> torch.Tensor:
    """A random camera-shake kernel (after Boracchi & Foi 2012): a particle with inertia and random
    acceleration traces a path that is centred, scaled to fit ``size``, splatted and normalised."""
    if size < 3 or size % 2 == 0:
        raise InputError(f"motion kernel size must be an odd integer >= 3, got {size}")
    gen = generator(seed)
    angle = _uniform(gen, 0, 2 * math.pi)
    v = torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64)
    pos = torch.zeros(2, dtype=torch.float64)
    path = []
    for _ in range(steps):
        v = v + shake * torch.randn(2, generator=gen, dtype=torch.float64)
        v = v / v.norm().clamp_min(1e-12)
        pos = pos + v
        path.append(pos.clone())
    pts = torch.stack(path)
    pts = pts - (pts.max(0).values + pts.min(0).values) / 2
    extent = float(pts.abs().max())
    length = _uniform(gen, 0.4, 1.0) * (size // 2 - 1)  # random blur length, within the kernel
    pts = pts * (length / max(extent, 1e-12))
    k = _splat(pts, size)
    return k / k.sum()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each image with ``kernel`` ((k, k), or (N, k, k): one per image), reflecting at the borders."""
    _check(x, "blur")
    n, c, h, w = x.shape
    k = kernel if kernel.ndim == 3 else kernel[None].expand(n, -1, -1)
    if k.shape[0] != n or k.shape[-1] != k.shape[-2] or k.shape[-1] % 2 == 0:
        raise InputError(f"kernel must be (k, k) or ({n}, k, k) with odd k, got {tuple(kernel.shape)}")
    r = k.shape[-1] // 2
    mode = "reflect" if r < h and r < w else "replicate"
    xp = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode=mode)
    weight = k.to(x.device, x.dtype).flip(-1, -2).repeat_interleave(c, 0)[:, None]  # convolution, not correlation
    return F.conv2d(xp, weight, groups=n * c).view(n, c, h, w)


def gaussian_blur(
    x: torch.Tensor, sigma: float | None = None, *, size: int = 21, seed: Seed = None, anisotropic: bool = True
) -> torch.Tensor:
    """Blur with an isotropic Gaussian of ``sigma`` px, or (``sigma=None``) a random Gaussian kernel per image."""
    if sigma is not None:
        return blur(x, gaussian_kernel(size, sigma))
    gen = generator(seed)
    _check(x, "gaussian_blur")
    return blur(x, torch.stack([random_gaussian_kernel(size, anisotropic=anisotropic, seed=gen) for _ in x]))


def motion_blur(x: torch.Tensor, *, size: int = 21, seed: Seed = None) -> torch.Tensor:
    """Blur each image with its own random camera-shake kernel (:func:`motion_kernel`)."""
    _check(x, "motion_blur")
    gen = generator(seed)
    return blur(x, torch.stack([motion_kernel(size, seed=gen) for _ in x]))


# ------------------------------------------------------------------------------------------- rain, haze


def rain(
    x: torch.Tensor,
    *,
    seed: Seed = None,
    density: float | tuple[float, float] = (0.002, 0.01),
    length: float | tuple[float, float] = (10, 30),
    angle: float | tuple[float, float] = (-20, 20),
    strength: float | tuple[float, float] = (0.5, 0.9),
) -> torch.Tensor:
    """Add synthetic rain streaks (``O = clip(B + S)``, the additive model of Rain100L).

    Per image: random drops (a fraction ``density`` of pixels) are smeared along a line of ``length`` px at
    ``angle`` degrees from vertical and scaled to peak ``strength``; the same streaks on every channel.
    Ranges are drawn uniformly per image; a single number fixes the value.
    """
    _check(x, "rain")
    gen = generator(seed)
    n, _, h, w = x.shape
    layers = []
    for _ in range(n):
        d, ln = _uniform(gen, *_range(density)), _uniform(gen, *_range(length))
        a, s = math.radians(_uniform(gen, *_range(angle))), _uniform(gen, *_range(strength))
        drops = (torch.rand(h, w, generator=gen, dtype=torch.float64) < d).double()
        drops = drops * (0.5 + 0.5 * torch.rand(h, w, generator=gen, dtype=torch.float64))
        size = 2 * int(math.ceil(ln / 2)) + 1
        t = torch.linspace(-ln / 2, ln / 2, max(2, int(4 * ln)), dtype=torch.float64)
        line = _splat(torch.stack([t * math.cos(a), t * math.sin(a)], 1), size)
        streak = blur(drops[None, None], line / line.max())[0, 0]
        streak = streak / streak.max().clamp_min(1e-12) * s
        layers.append(streak)
    s_layer = torch.stack(layers)[:, None].to(x.device, x.dtype)
    return (x + s_layer).clamp(0, 1)


def random_depth(n: int, h: int, w: int, *, seed: Seed = None, grid: int = 4) -> torch.Tensor:
    """Smooth random depth maps (N, 1, H, W) in [0, 1]: a ``grid``x``grid`` random field, bicubic-upsampled,
    plus a random vertical ramp (scenes recede towards the top), normalised per image."""
    gen = generator(seed)
    field_ = torch.rand(n, 1, grid, grid, generator=gen, dtype=torch.float64)
    d = imresize(field_, size=(h, w))
    ramp = torch.linspace(1, 0, h, dtype=torch.float64).view(1, 1, h, 1)
    d = d + torch.rand(n, 1, 1, 1, generator=gen, dtype=torch.float64) * 2 * ramp
    lo = d.amin((2, 3), keepdim=True)
    hi = d.amax((2, 3), keepdim=True)
    return (d - lo) / (hi - lo).clamp_min(1e-12)


def haze(
    x: torch.Tensor,
    *,
    seed: Seed = None,
    beta: float | tuple[float, float] = (0.6, 1.8),
    airlight: float | tuple[float, float] = (0.7, 1.0),
) -> torch.Tensor:
    """Synthetic haze by atmospheric scattering, ``I = J t + A (1 - t)`` with ``t = exp(-beta d)``.

    ``d`` is :func:`random_depth`; ``beta`` (scattering) and ``A`` (grey airlight) are uniform per image.
    """
    _check(x, "haze")
    gen = generator(seed)
    n, _, h, w = x.shape
    d = random_depth(n, h, w, seed=gen)
    b = torch.tensor([_uniform(gen, *_range(beta)) for _ in range(n)], dtype=torch.float64).view(n, 1, 1, 1)
    a = torch.tensor([_uniform(gen, *_range(airlight)) for _ in range(n)], dtype=torch.float64).view(n, 1, 1, 1)
    t = torch.exp(-b * d).to(x.device, x.dtype)
    return x * t + a.to(x.device, x.dtype) * (1 - t)


# ------------------------------------------------------------------------------- inpainting, colouring


def random_mask(n: int, h: int, w: int, *, ratio: float = 0.5, seed: Seed = None) -> torch.Tensor:
    """(N, 1, H, W) float mask, 1 = known pixel, 0 = missing; each pixel is missing with probability ``ratio``."""
    if not 0 <= ratio <= 1:
        raise InputError(f"ratio must be in [0, 1], got {ratio}")
    return (torch.rand(n, 1, h, w, generator=generator(seed), dtype=torch.float64) >= ratio).float()


def mask_pixels(x: torch.Tensor, *, ratio: float = 0.5, seed: Seed = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inpainting input: (x with missing pixels set to 0, the mask with 1 = known)."""
    _check(x, "mask_pixels")
    n, _, h, w = x.shape
    mask = random_mask(n, h, w, ratio=ratio, seed=seed).to(x.device, x.dtype)
    return x * mask, mask


def color_hints(
    x: torch.Tensor, *, ratio: float = 0.03, seed: Seed = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colourisation input from an RGB batch: (grey (N,1,H,W) BT.601 luma, hints (N,3,H,W) with the true
    colour at a random fraction ``ratio`` of pixels and 0 elsewhere, mask (N,1,H,W) with 1 at the hints)."""
    _check(x, "color_hints")
    if x.shape[1] != 3:
        raise InputError("color_hints needs RGB images (C = 3)")
    n, _, h, w = x.shape
    mask = 1 - random_mask(n, h, w, ratio=ratio, seed=seed).to(x.device, x.dtype)
    return rgb_to_grey(x), x * mask, mask


colour_hints = color_hints  # the earlier spelling, still accepted: identifiers are spelled "color" (colorize)


# ------------------------------------------------------------------------------------------------ specs

_SPECS: dict[str, tuple[str, Callable[..., Any], dict[str, type]]] = {
    # name: (positional parameter, function, parameter types)
    "noise": ("sigma", gaussian_noise, {"sigma": float, "clip": bool, "quantize": bool}),
    "jpeg": ("quality", jpeg, {"quality": int, "subsampling": str}),
    "bicubic": ("scale", bicubic_downsample, {"scale": int, "quantize": bool}),
    "gaussian_blur": ("sigma", gaussian_blur, {"sigma": float, "size": int, "anisotropic": bool}),
    "motion_blur": ("size", motion_blur, {"size": int}),
    "rain": ("density", rain, {"density": float, "length": float, "angle": float, "strength": float}),
    "haze": ("beta", haze, {"beta": float, "airlight": float}),
    "mask": ("ratio", mask_pixels, {"ratio": float}),
    "hints": ("ratio", color_hints, {"ratio": float}),
}
_SEEDED = {"noise", "gaussian_blur", "motion_blur", "rain", "haze", "mask", "hints"}
# Masked specs -> (the model condition they feed, default ratio); the defaults are training's (train.data).
MASKED = {"mask": ("mask", 0.5), "hints": ("hints", 0.03)}
# The parameters that training may give as a range LOW-HIGH, drawn per sample (noise:0-55, jpeg:10-40).
ODD: frozenset[tuple[str, str]] = frozenset({("motion_blur", "size")})  # (degradation, parameter): odd values only
RANGED: dict[str, tuple[str, ...]] = {
    "noise": ("sigma",),
    "jpeg": ("quality",),
    "gaussian_blur": ("sigma",),
    "motion_blur": ("size",),
    "rain": ("density",),
    "haze": ("beta",),
}


@dataclass(frozen=True)
class Degradation:
    """A named degradation with fixed parameters: ``d(x, seed)`` applies it. Make one with :func:`parse`."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __call__(self, x: torch.Tensor, seed: Seed = None) -> torch.Tensor:
        if self.name in MASKED:
            return self.with_mask(x, seed)[0]
        fn = _SPECS[self.name][1]
        kwargs = dict(self.params)
        if self.name in _SEEDED:
            kwargs["seed"] = seed
        return fn(x, **kwargs)

    @property
    def condition(self) -> str | None:
        """``"mask"`` (inpainting) or ``"hints"`` (colourisation) for a masked spec, else None."""
        return MASKED[self.name][0] if self.name in MASKED else None

    def with_mask(self, x: torch.Tensor, seed: Seed = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A masked spec's (network input, mask (N, 1, H, W), 1 = known), as training builds them.

        ``mask``: the image with its missing pixels set to 0; ``hints``: the grey (BT.601 luma) image as RGB
        with the true colour pasted in where the mask is 1 (its luma is the grey image everywhere).
        """
        if self.name == "mask":
            return mask_pixels(x, ratio=self.params["ratio"], seed=seed)
        if self.name == "hints":
            grey, hints, mask = color_hints(x, ratio=self.params["ratio"], seed=seed)
            return grey.expand(-1, 3, -1, -1) * (1 - mask) + hints, mask
        raise InputError(f"the degradation {self} has no mask; with_mask() is for mask:RATIO and hints:RATIO")

    @property
    def random(self) -> bool:
        """Whether the result depends on the seed (a Gaussian blur of fixed sigma does not)."""
        return self.name in _SEEDED and not (self.name == "gaussian_blur" and "sigma" in self.params)

    @property
    def scale(self) -> int:
        """The downscaling factor (1 unless this is a bicubic downsample)."""
        return int(self.params.get("scale", 1)) if self.name == "bicubic" else 1

    def __str__(self) -> str:
        if self.name in MASKED:  # as training writes them: mask:0.5, hints:0.03
            return f"{self.name}:{self.params['ratio']:g}"
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in self.params.items()) if self.params else "")


def parse(spec: str) -> Degradation:
    """``"name[:value][,key=value...]"``: ``noise:25``, ``noise:sigma=25,clip``, ``jpeg:10``, ``bicubic:4``,
    ``gaussian_blur:1.6``, ``gaussian_blur`` (random kernels), ``motion_blur:21``, ``rain``, ``haze:beta=1.2``,
    ``mask:0.5`` (fraction of pixels missing, default 0.5), ``hints:0.03`` (fraction with known colour, default
    0.03). The grammar is :mod:`restorekit.specs`; ranges (``noise:0-55``) are for training (:func:`parse_ranged`)."""
    return _degradation(*parse_params(spec, _SPECS, "degradation", example=_EXAMPLE))


def parse_ranged(spec: str) -> tuple[Degradation, dict[str, Range]]:
    """A training spec, where the parameters of :data:`RANGED` may be ``LOW-HIGH`` (``noise:0-55``,
    ``jpeg:quality=10-40``): (the degradation with each range at its low end, {parameter: range}).

    >>> parse_ranged("noise:0-55")
    (Degradation(name='noise', params=mappingproxy({'sigma': 0.0})), {'sigma': Range(low=0.0, high=55.0)})
    """
    name, params = parse_params(spec, _SPECS, "degradation", example=_EXAMPLE, ranged=RANGED)
    ranges = {k: v for k, v in params.items() if isinstance(v, Range)}
    types = _SPECS[name][2]
    fixed = {k: types[k](f"{v.low:g}") if k in ranges else v for k, v in params.items()}
    return _degradation(name, fixed), ranges


_EXAMPLE = " (e.g. noise:25, jpeg:10)"


def _degradation(name: str, params: dict[str, Any]) -> Degradation:
    positional = _SPECS[name][0]
    if name in ("noise", "jpeg", "bicubic") and positional not in params:
        example = {"noise": "noise:25", "jpeg": "jpeg:10", "bicubic": "bicubic:4"}[name]
        raise InputError(f"degradation {name!r} needs its {positional}, e.g. {example}")
    if name in MASKED:
        ratio = params.setdefault("ratio", MASKED[name][1])
        if not 0 <= ratio <= 1:
            what = "missing" if name == "mask" else "with known colour"
            raise InputError(
                f"degradation {name!r}: the ratio is the fraction of pixels {what}, in [0, 1]; got {ratio}"
            )
    return Degradation(name, params)
