"""Measure what is wrong with an image: JPEG quality, noise level, haze, rain, each with a confidence.

>>> from restorekit import analyze
>>> report = analyze("photo.jpg")            # doctest: +SKIP
>>> report.jpeg_quality, report.noise_sigma   # doctest: +SKIP
(75, 3.1)

:func:`analyze` accepts what :class:`~restorekit.Restorer` accepts (a path, a PIL image, a numpy array, a
tensor) and returns an :class:`Analysis`: one :class:`Finding` per kind of degradation. A finding whose
``present`` is None is an honest "unknown": the measurement could not decide.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import image as rkimage
from .color import GREY_WEIGHTS
from .errors import InputError

__all__ = ["KINDS", "Analysis", "Finding", "analyze", "ijg_table", "quality_from_tables"]

# The degradations analyze measures, in the order they are reported.
KINDS = ("jpeg", "noise", "haze", "rain")


@dataclass(frozen=True)
class Finding:
    """One measured degradation.

    ``kind``: one of :data:`KINDS`. ``present``: True, False, or None (unknown). ``value``: its strength in
    the kind's own unit (``jpeg``: the quality 1..100; ``noise``: σ on the 0..255 scale, the mean over the
    channels; ``haze``: the detector's score in 0..1; ``rain``: the detector's score in 0..1), None where it
    could not be measured. ``confidence``: 0..1, how far the measurement is from its decision threshold (1:
    certain, e.g. a JPEG quality read from the file's own tables). ``method``: how it was measured, in a few
    words (e.g. ``"quantisation tables (IJG scaling, exact)"``). ``detail``: the measurement's parts
    (per-channel σ, chroma subsampling, ...), JSON-serialisable.
    """

    kind: str
    present: bool | None
    value: float | None = None
    confidence: float = 0.0
    method: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "present": self.present,
            "value": self.value,
            "confidence": round(float(self.confidence), 3),
            "method": self.method,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` measured on one image: one :class:`Finding` per kind in :data:`KINDS`."""

    findings: tuple[Finding, ...]
    size: tuple[int, int]  # (height, width)
    channels: int  # 1 (grey) or 3 (colour)
    source: str | None = None  # the path, for a file

    def get(self, kind: str) -> Finding:
        for finding in self.findings:
            if finding.kind == kind:
                return finding
        raise KeyError(f"no {kind!r} finding; the kinds are {', '.join(KINDS)}")

    @property
    def noise_sigma(self) -> float | None:
        """The estimated noise σ (0..255 scale) when noise was found, else None."""
        f = self.get("noise")
        return f.value if f.present else None

    @property
    def jpeg_quality(self) -> int | None:
        """The JPEG quality when the image is (or was) a JPEG, else None."""
        f = self.get("jpeg")
        return None if not f.present or f.value is None else int(round(f.value))

    @property
    def degradations(self) -> list[Finding]:
        """The findings that are present, in :data:`KINDS` order."""
        return [f for f in self.findings if f.present]

    @property
    def clean(self) -> bool:
        """True when nothing was found present (unknowns do not count as found)."""
        return not self.degradations

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "size": list(self.size),
            "channels": self.channels,
            "clean": self.clean,
            "findings": [f.to_dict() for f in self.findings],
        }


# ------------------------------------------------------------------------------------------ JPEG tables

# The IJG (libjpeg) base tables of the JPEG standard, Annex K, in natural (row-major) order.
_LUMA_BASE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_BASE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)  # fmt: skip
# ZIGZAG[k] is the natural index of the k-th coefficient in zigzag order.
_ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
    60, 61, 54, 47, 55, 62, 63,
)  # fmt: skip
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_table(quality: int, *, chroma: bool = False, baseline: bool = True) -> np.ndarray:
    """The 64 steps (natural order) libjpeg's ``jpeg_set_quality(quality)`` writes: ``scale = 5000 / q`` below
    50, ``200 - 2 q`` from 50, ``step = (base * scale + 50) // 100`` clamped to 1..255 (baseline) or 1..32767."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise InputError(f"JPEG quality must be an integer from 1 to 100, got {quality!r}")
    scale = 5000 // int(quality) if quality < 50 else 200 - 2 * int(quality)
    base = np.array(_CHROMA_BASE if chroma else _LUMA_BASE, dtype=np.int64)
    return np.clip((base * scale + 50) // 100, 1, 255 if baseline else 32767)


@lru_cache(maxsize=1)
def _all_tables() -> np.ndarray:
    """(100, 2, 64): the baseline luma and chroma tables for qualities 1..100."""
    return np.stack([np.stack([ijg_table(q), ijg_table(q, chroma=True)]) for q in range(1, 101)])


def _table_distance(tables: list[np.ndarray]) -> np.ndarray:
    """For each quality 1..100, the mean |log step - log IJG step| over the given tables (luma, then chroma)."""
    ref = _all_tables()
    dist = np.zeros(100)
    for i, t in enumerate(tables[:2]):
        dist += np.abs(np.log(ref[:, i, :]) - np.log(np.maximum(t, 1))[None]).mean(axis=1)
    return dist / min(len(tables), 2)


def _unzigzag(table: np.ndarray) -> np.ndarray:
    """A table of 64 steps given in zigzag order, in natural (row-major) order."""
    out = np.empty(64, np.int64)
    out[list(_ZIGZAG)] = table
    return out


def quality_from_tables(tables: dict[int, Any] | list[Any]) -> tuple[int, bool, dict[str, Any]]:
    """The IJG quality of a JPEG's quantisation tables (Pillow's ``im.quantization``): (quality, exact, detail).

    Exact when every table equals libjpeg's table at that quality (luma for the first, chroma for the second);
    otherwise the quality whose tables are nearest in log-step, with ``detail["mean_log_step_error"]``. Tables
    are taken in natural order; a table that matches only after reordering from zigzag is reordered.
    """
    items = [tables[k] for k in sorted(tables)] if isinstance(tables, dict) else list(tables)
    arrays = [np.asarray(list(t), dtype=np.int64) for t in items]
    if not arrays or any(a.shape != (64,) for a in arrays):
        raise InputError("JPEG quantisation tables must be sequences of 64 steps")
    ref = _all_tables()
    natural, unzigzagged = arrays, [_unzigzag(a) for a in arrays]
    for order, cand in (("natural", natural), ("zigzag", unzigzagged)):
        for q in range(100, 0, -1):
            if all(np.array_equal(t, ref[q - 1, min(i, 1)]) for i, t in enumerate(cand)):
                return q, True, {"tables": len(arrays), "order": order}
    best = None
    for order, cand in (("natural", natural), ("zigzag", unzigzagged)):
        dist = _table_distance(cand)
        q = int(np.argmin(dist)) + 1
        if best is None or dist[q - 1] < best[1]:
            best = (q, float(dist[q - 1]), order)
    q, err, order = best
    return q, False, {"tables": len(arrays), "order": order, "mean_log_step_error": round(err, 4)}


def _jpeg_header(img: Image.Image) -> dict[str, Any] | None:
    """What a decoded JPEG file says about itself: its tables, subsampling and progressive flag."""
    if getattr(img, "format", None) not in ("JPEG", "MPO") or not getattr(img, "quantization", None):
        return None
    from PIL import JpegImagePlugin

    try:
        sampling = JpegImagePlugin.get_sampling(img)
    except Exception:  # noqa: BLE001 -- a header Pillow cannot describe: say so rather than fail
        sampling = None
    layers = len(getattr(img, "layer", []) or [])
    if sampling == -1 and layers == 1:
        sub = "grey"
    else:
        sub = _SUBSAMPLING.get(sampling, "other") if sampling is not None else "unknown"
    progressive = bool(img.info.get("progressive") or img.info.get("progression"))
    return {"tables": {int(k): list(v) for k, v in img.quantization.items()}, "subsampling": sub,
            "progressive": progressive}  # fmt: skip


def _jpeg_from_header(header: dict[str, Any]) -> Finding:
    q, exact, detail = quality_from_tables(header["tables"])
    detail.update(subsampling=header["subsampling"], progressive=header["progressive"])
    detail["negligible"] = q >= JPEG_NEGLIGIBLE
    if exact:
        return Finding("jpeg", True, float(q), 1.0, "quantisation tables (IJG scaling, exact)", detail)
    err = detail["mean_log_step_error"]
    detail["note"] = "the tables are not libjpeg's scaled tables; the quality is the nearest IJG quality"
    confidence = float(np.clip(1.0 - err / 0.5, 0.1, 0.9))
    return Finding("jpeg", True, float(q), confidence, "quantisation tables (nearest IJG quality)", detail)


# ------------------------------------------------------------------------------ JPEG from decoded pixels

_DCT = np.array(
    [[(math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8)) * math.cos((2 * x + 1) * u * math.pi / 16)
      for x in range(8)] for u in range(8)]
)  # fmt: skip  # orthonormal 8-point DCT-II: the JPEG FDCT's scaling exactly
_LATTICE_COEFS = _ZIGZAG[:15]  # DC and the 14 lowest AC frequencies: the ones that survive quantisation
_LATTICE_SCORE = 0.35  # a step is detected where mean cos(2 pi F / q) over the coefficients reaches this
_LATTICE_MIN_AC = 3  # decoded JPEG: at least this many AC frequencies lie on a lattice of step >= 2
# Decoded pixels of a JPEG at this quality or above count as clean: the artifacts are below visibility (the
# BSDS photographs behind BSD68/CBSD68 were distributed as quality-95 JPEGs, and are the denoising benchmarks'
# clean references). A JPEG *file* is always reported present, with its exact quality.
JPEG_NEGLIGIBLE = 90


def _grid_offsets(y: np.ndarray) -> list[tuple[int, int]]:
    """Candidate 8x8 grid offsets (row, column): (0, 0) and the phase of the strongest blocking."""

    def phase(d: np.ndarray) -> int:
        energy = np.array([d[..., k::8].mean() for k in range(8)])
        return (int(np.argmax(energy)) + 1) % 8

    dx = phase(np.abs(np.diff(y, axis=1)))
    dy = phase(np.abs(np.diff(y, axis=0)).T)
    return [(0, 0)] if (dy, dx) == (0, 0) else [(0, 0), (dy, dx)]


def _blocking_ratio(y: np.ndarray, offset: tuple[int, int]) -> float:
    """Mean |gradient| across the 8x8 block boundaries over the mean inside blocks, both directions."""
    ratios = []
    for d, off in ((np.abs(np.diff(y, axis=1)), offset[1]), (np.abs(np.diff(y, axis=0)).T, offset[0])):
        b = (off - 1) % 8
        inside = [d[..., k::8].mean() for k in range(8) if k != b]
        ratios.append(d[..., b::8].mean() / max(float(np.mean(inside)), 1e-6))
    return float(np.mean(ratios))


def _lattice_steps(y: np.ndarray, offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each coefficient of :data:`_LATTICE_COEFS`: the largest step q (0 when none) on whose multiples the
    8x8 block DCT coefficients lie, and that lattice's score."""
    oy, ox = offset
    h, w = (y.shape[0] - oy) // 8, (y.shape[1] - ox) // 8
    blocks = y[oy : oy + 8 * h, ox : ox + 8 * w].reshape(h, 8, w, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    coef = (_DCT @ (blocks - 128.0) @ _DCT.T).reshape(-1, 64)[:, list(_LATTICE_COEFS)]
    steps, scores = np.zeros(len(_LATTICE_COEFS)), np.zeros(len(_LATTICE_COEFS))
    for k in range(coef.shape[1]):
        f = coef[:, k]
        f = f[np.abs(f) > 1.5]  # the zeros lie on every lattice
        if len(f) > 1500:
            f = f[:: len(f) // 1500 + 1]
        if len(f) < 32:
            continue
        top = int(min(255, 2 * np.median(np.abs(f))))
        if top < 2:
            continue
        q = np.arange(2, top + 1, dtype=np.float64)
        s = np.cos(2 * np.pi * f[None, :] / q[:, None]).mean(axis=1)
        hit = np.nonzero(s >= _LATTICE_SCORE)[0]
        if len(hit):
            steps[k], scores[k] = q[hit[-1]], s[hit[-1]]
    return steps, scores


def _jpeg_from_pixels(y: np.ndarray) -> Finding:
    """A decoded JPEG's coefficients lie on the lattice of its quantisation steps: find the steps of the lowest
    frequencies and the IJG quality whose luma table they match best."""
    if min(y.shape) < 32:
        return Finding("jpeg", None, None, 0.0, "too small to measure", {})
    best = None
    for offset in _grid_offsets(y):
        steps, scores = _lattice_steps(y, offset)
        n_ac = int((steps[1:] >= 2).sum())
        if best is None or n_ac > best[2]:
            best = (offset, steps, n_ac, scores)
        if n_ac >= _LATTICE_MIN_AC:
            break
    offset, steps, n_ac, scores = best
    blocking = _blocking_ratio(y, offset)
    detail: dict[str, Any] = {
        "grid_offset": list(offset),
        "steps": [int(s) for s in steps],
        "lattice_frequencies": n_ac,
        "blocking_ratio": round(blocking, 3),
    }
    method = "DCT coefficient lattice (decoded pixels)"
    if n_ac < _LATTICE_MIN_AC:
        confidence = 1.0 - n_ac / _LATTICE_MIN_AC
        return Finding("jpeg", False, None, confidence, method, detail)
    ref = _all_tables()[:, 0, list(_LATTICE_COEFS)]  # (100, 15) luma steps
    known = steps >= 2
    # A detected step must match; an undetected one (step 1, or too few coefficients) is consistent with a
    # small step and costs only where the table's step is large.
    err = np.where(known[None], np.abs(np.log(ref) - np.log(np.maximum(steps, 1))[None]), 0.0)
    err += np.where(~known[None], np.log(np.maximum(ref / 3.0, 1.0)), 0.0)
    q = int(np.argmin(err.sum(axis=1))) + 1
    detail["table_error"] = round(float(err[q - 1].sum() / len(steps)), 4)
    confidence = float(min(1.0, n_ac / 8))
    if q >= JPEG_NEGLIGIBLE:
        detail["note"] = f"traces of a JPEG of quality {q}: at {JPEG_NEGLIGIBLE} or above they count as clean"
        return Finding("jpeg", False, float(q), confidence, method + ", nearest IJG quality", detail)
    return Finding("jpeg", True, float(q), confidence, method + ", nearest IJG quality", detail)


# ------------------------------------------------------------------------------------------------ noise

_NOISE_PATCH = 7  # patch side of the PCA estimator
_NOISE_STRIDE = 3


def _sigma_mad(ch: np.ndarray) -> float:
    """Donoho's estimator: median |HH| / 0.6745 of the finest Haar diagonal sub-band (orthonormal)."""
    h, w = ch.shape[0] // 2 * 2, ch.shape[1] // 2 * 2
    c = ch[:h, :w]
    hh = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2
    return float(np.median(np.abs(hh)) / 0.6745)


def _pca_sigma(x: np.ndarray) -> float:
    """Chen, Zhu & Heng (ICCV 2015) on patches ``x`` (N, d): the noise variance is the mean of the patch
    covariance's smallest eigenvalues, taking as many as keep their mean equal to their median."""
    x = x - x.mean(axis=0)
    eig = np.maximum(np.sort(np.linalg.eigvalsh(x.T @ x / len(x))), 0.0)
    for i in range(len(eig), 0, -1):
        tau = eig[:i].mean()
        if (eig[:i] > tau).sum() == (eig[:i] < tau).sum():
            return float(math.sqrt(tau))
    return float(math.sqrt(eig[0]))


def _patches(ch: np.ndarray, patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(patches (N, patch^2), their texture strength: the sum of squared horizontal and vertical differences)."""
    view = np.lib.stride_tricks.sliding_window_view(ch, (patch, patch))[::stride, ::stride]
    x = view.reshape(-1, patch * patch)
    gx = np.diff(view, axis=3)
    gy = np.diff(view, axis=2)
    tex = (gx**2).sum(axis=(2, 3)) + (gy**2).sum(axis=(2, 3))
    return x, tex.reshape(-1)


@lru_cache(maxsize=4)
def _texture_quantile(patch: int, p: float = 0.99) -> float:
    """The ``p`` quantile of :func:`_patches`' texture strength on white noise of sigma 1 (measured once, seeded)."""
    noise = np.random.default_rng(0).standard_normal((256, 256))
    return float(np.quantile(_patches(noise, patch, 1)[1], p))


def _sigma_pca(ch: np.ndarray, patch: int = _NOISE_PATCH, stride: int = _NOISE_STRIDE) -> float:
    """Patch PCA on all patches (Chen et al. 2015)."""
    x, _ = _patches(ch, patch, stride)
    if len(x) < 4 * patch * patch:
        return _sigma_mad(ch)
    return _pca_sigma(x)


def _ndtr(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF (Abramowitz & Stegun 7.1.26 for erf: absolute error below 1.5e-7)."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def _clipped_moments(mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of clip(N(mu, sigma^2), 0, 255)."""
    a, b = (0.0 - mu) / sigma, (255.0 - mu) / sigma
    pa, pb = _ndtr(a), _ndtr(b)
    da, db = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi), np.exp(-0.5 * b * b) / math.sqrt(2 * math.pi)
    inside = pb - pa
    m1 = mu * inside + sigma * (da - db) + 255.0 * (1 - pb)
    m2 = (mu * mu + sigma * sigma) * inside + 2 * mu * sigma * (da - db) + sigma * sigma * (a * da - b * db)
    m2 = m2 + 255.0**2 * (1 - pb)
    return m1, np.maximum(m2 - m1 * m1, 0.0)


def _unclip_sigma(observed: float, means: np.ndarray) -> float:
    """The sigma of Gaussian noise that, clipped to 0..255 around patches of these observed means, leaves the
    observed standard deviation: clipping shrinks noise near black and white, which biases every estimate low."""
    m = np.sort(np.asarray(means, dtype=np.float64))
    if len(m) > 256:  # the moments depend on the spread of means only: a sorted subsample keeps it
        m = m[np.linspace(0, len(m) - 1, 256).astype(np.int64)]
    # predicted(sigma) for a grid of sigmas at once; the crossing with the observed value is interpolated.
    g = observed * np.linspace(1.0, 2.5, 31)
    grid = np.broadcast_to(g[:, None], (len(g), len(m)))
    mm = np.broadcast_to(m[None], grid.shape)
    lo, hi = -4.0 * grid, 255.0 + 4.0 * grid
    for _ in range(16):  # the underlying mean of each patch: E[clip] is increasing in mu
        mid = (lo + hi) / 2
        below = _clipped_moments(mid, grid)[0] < mm
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    pred = np.sqrt(_clipped_moments((lo + hi) / 2, grid)[1].mean(axis=1))
    if pred[0] >= observed * 0.999:
        return observed
    if pred[-1] < observed:
        return float(g[-1])
    k = int(np.argmax(pred >= observed))  # pred increases with sigma
    t = (observed - pred[k - 1]) / max(pred[k] - pred[k - 1], 1e-12)
    return float(g[k - 1] + t * (g[k] - g[k - 1]))


def _sigma_weak_texture(
    ch: np.ndarray, patch: int = _NOISE_PATCH, stride: int = _NOISE_STRIDE, unclip: bool = True
) -> float:
    """Patch PCA on weakly textured patches (Liu, Tanaka & Okutomi 2013): start from all patches, then keep
    only those whose gradient energy pure noise of the current sigma would reach (99 %), and re-estimate.
    ``unclip``: where the image is clipped to 0..255, correct the estimate for the clipping (:func:`_unclip_sigma`)."""
    x, tex = _patches(ch, patch, stride)
    if len(x) < 4 * patch * patch:
        return _sigma_mad(ch)
    sigma = _pca_sigma(x)
    keep = np.ones(len(x), dtype=bool)
    limit = _texture_quantile(patch)
    for _ in range(5):
        sel = tex < max(sigma, 0.1) ** 2 * limit
        if sel.sum() < 2 * patch * patch:
            break
        keep = sel
        new = _pca_sigma(x[keep])
        done = abs(new - sigma) < 1e-3
        sigma = new
        if done:
            break
    clipped = ch.min() >= 0 and ch.max() <= 255 and ((ch <= 0) | (ch >= 255)).mean() > 1e-3
    if unclip and clipped and sigma > 1:
        sigma = _unclip_sigma(sigma, x[keep].mean(axis=1))
    return sigma


NOISE_ESTIMATORS = {"mad": _sigma_mad, "pca": _sigma_pca, "weak_texture": _sigma_weak_texture}
_NOISE_ESTIMATOR = "weak_texture"
# Clean photographs have noise of their own (film grain, sensor noise, 8-bit rounding): below NOISE_CLEAN
# an image measures clean, from NOISE_PRESENT noisy, and in between "unknown" (weak noise that may be the
# photograph's own). Set on the training photographs (BSD200, T91, Train400); checks in docs/auto.md.
NOISE_CLEAN = 3.0
NOISE_PRESENT = 6.0
_NOISE_METHODS = {
    "pca": "patch PCA (Chen et al. 2015)",
    "mad": "wavelet HH MAD",
    "weak_texture": "patch PCA on weakly textured patches (Liu et al. 2013), clipping corrected",
}


def _noise(planes: np.ndarray) -> Finding:
    est = NOISE_ESTIMATORS[_NOISE_ESTIMATOR]
    per = [est(ch) for ch in planes]
    sigma = float(np.mean(per))
    detail = {"per_channel": [round(s, 3) for s in per], "clean_below": NOISE_CLEAN, "noisy_from": NOISE_PRESENT}
    present: bool | None
    if sigma >= NOISE_PRESENT:
        present, confidence = True, min(1.0, (sigma - NOISE_PRESENT) / NOISE_PRESENT + 0.5)
    elif sigma < NOISE_CLEAN:
        present, confidence = False, min(1.0, (NOISE_CLEAN - sigma) / NOISE_CLEAN + 0.5)
    else:
        present, confidence = None, 0.0
        detail["note"] = "weak noise: it may be the photograph's own grain"
    return Finding("noise", present, round(sigma, 3), float(confidence), _NOISE_METHODS[_NOISE_ESTIMATOR], detail)


# ------------------------------------------------------------------------------ noise under JPEG compression

# Quantisation flattens the weakly textured patches the pixel estimate reads, so a noisy photo saved as a JPEG
# measures almost clean there (sigma 25 at quality 30 reads about 1). The file's own coefficients still show it:
# white noise of sigma (luma) adds N(0, sigma^2) to every 8x8 DCT coefficient (the JPEG DCT is orthonormal),
# so a coefficient whose clean value is near 0 is quantised to nonzero with probability 2 (1 - Phi(Q / 2 sigma)).
# The fit uses the AC frequencies above the five lowest, in the flattest blocks, chosen by their neighbours'
# count of nonzero coefficients (noise is independent from block to block, texture is not), so the choice does
# not select on the noise being measured.
_UNDER_MEASURED = np.array(_ZIGZAG[6:])
_UNDER_LOW = np.array(_ZIGZAG[1:6])
_UNDER_FRACTION = 0.1  # the flattest tenth of the blocks
_UNDER_SIGMAS = np.exp(np.linspace(math.log(0.25), math.log(160.0), 500))
_UNDER_MAX_BLOCKS = 1 << 16  # larger images: every k-th row of blocks, so a 50 MP photo costs what 4 MP does
# Clean photographs read above 0 here (texture the neighbours' counts do not catch): the estimate counts as
# noise only above the 95th percentile of what the 68 clean CBSD68 images read when saved at that quality
# (tests/benchmarks/eval_analyze.py --under-jpeg; docs/auto.md), linear in the quality between the rows.
_UNDER_FLOOR = ((10, 25.1), (20, 17.8), (30, 15.7), (40, 13.2), (50, 12.0), (60, 11.3), (75, 9.7), (90, 8.2))


def _under_floor(quality: float) -> float:
    qs, floors = zip(*_UNDER_FLOOR)
    return float(np.interp(quality, qs, floors))


def _block_coefficients(luma: np.ndarray, clipped: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """The 64 DCT coefficients (natural order) of every whole 8x8 block from (oy, ox) with no clipped pixel."""
    y, cl = luma[oy:, ox:], clipped[oy:, ox:]
    h, w = y.shape[0] // 8, y.shape[1] // 8
    step = max(1, math.ceil(h * w / _UNDER_MAX_BLOCKS))
    b = y[: h * 8, : w * 8].reshape(h, 8, w, 8)[::step].transpose(0, 2, 1, 3)
    ok = ~cl[: h * 8, : w * 8].reshape(h, 8, w, 8)[::step].any(axis=(1, 3))
    return np.einsum("ux,hwxy,vy->hwuv", _DCT, b - 128.0, _DCT).reshape(b.shape[0], w, 64), ok


def _on_lattice(coef: np.ndarray, ok: np.ndarray, table: np.ndarray) -> tuple[float, int]:
    """How many of the nonzero quantised coefficients sit within 1.5 of a multiple of the step (1: this is the
    file's block grid and table; a wrong grid gives about 3 / step), and how many there were."""
    c = coef[ok]
    q = np.rint(c / table)
    nz = (q != 0) & (table >= 6)
    n = int(nz.sum())
    if n == 0:
        return 0.0, 0
    return float((np.abs(c - q * table)[nz] <= 1.5).mean()), n


def _noise_under_jpeg(luma: np.ndarray, clipped: np.ndarray, table: Any, colour: bool) -> dict[str, Any] | None:
    """The noise sigma (0..255, per RGB channel when ``colour``) before compression, from the JPEG's luma
    coefficients; None when the block grid of the file cannot be found (the pixels were resized or cropped)."""
    q_nat = np.asarray(table, dtype=np.float64).reshape(8, 8)
    best = None
    for oy in sorted({0, luma.shape[0] % 8}):  # EXIF-rotated files: the grid starts at the far edge
        for ox in sorted({0, luma.shape[1] % 8}):
            coef, ok = _block_coefficients(luma, clipped, oy, ox)
            for t in (q_nat, q_nat.T):
                score, n = _on_lattice(coef, ok, t.reshape(64))
                if best is None or score > best[0]:
                    best = (score, n, coef, ok, t.reshape(64))
    score, n, coef, ok, steps = best
    if (n >= 50 and score < 0.9) or ok.sum() < 20:  # not this file's grid, or too few unclipped blocks
        return None
    q = np.rint(coef / steps)
    counts = (q[..., _UNDER_MEASURED] != 0).sum(-1).astype(np.float64)
    pad = np.pad(counts, 1, mode="edge")
    neighbours = (pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]) / 4
    low = (np.abs(q[..., _UNDER_LOW]) * steps[_UNDER_LOW]).sum(-1)
    usable = ok & (low <= np.quantile(low[ok], 0.5))
    chosen = usable & (neighbours <= np.quantile(neighbours[usable], _UNDER_FRACTION))
    n_blocks = int(chosen.sum())
    nonzero = (q[chosen][:, _UNDER_MEASURED] != 0).sum(0)
    p = 2.0 * (1.0 - _ndtr(steps[_UNDER_MEASURED][None] / (2.0 * _UNDER_SIGMAS[:, None])))
    p = np.clip(p, 1e-9, 1 - 1e-9)
    loglik = (nonzero[None] * np.log(p) + (n_blocks - nonzero)[None] * np.log1p(-p)).sum(1)
    sigma_luma = float(_UNDER_SIGMAS[int(np.argmax(loglik))])
    # Independent noise of sigma in R, G and B is sigma * |GREY_WEIGHTS| in the luma.
    gain = float(np.linalg.norm(GREY_WEIGHTS)) if colour else 1.0
    return {"sigma": sigma_luma / gain, "blocks": n_blocks, "lattice": round(score, 3)}


def _with_noise_under_jpeg(noise: Finding, jpeg: Finding, luma: np.ndarray, planes: np.ndarray,
                           header: dict[str, Any]) -> Finding:  # fmt: skip
    """The pixel finding, or, where the file's coefficients show stronger noise than the pixels (above the floor
    clean photos read at that quality), the noise before compression, with ``detail["visible_sigma"]``."""
    tables = header["tables"]
    table = np.asarray(tables[min(tables)], dtype=np.int64)
    if jpeg.detail.get("order") == "zigzag":
        table = _unzigzag(table)
    clipped = ((planes <= 0) | (planes >= 255)).any(axis=0)
    under = _noise_under_jpeg(luma, clipped, table, planes.shape[0] == 3)
    if under is None:
        return noise
    floor = _under_floor(jpeg.value)
    sigma = under["sigma"]
    detail = dict(noise.detail)
    detail["under_jpeg"] = {"sigma": round(sigma, 3), "noisy_from": round(floor, 2), "blocks": under["blocks"]}
    if sigma < floor or (noise.present and noise.value >= sigma):
        # The coefficients show no noise above what clean photos read, or the pixels show as much themselves.
        return Finding(noise.kind, noise.present, noise.value, noise.confidence, noise.method, detail)
    detail["visible_sigma"] = noise.value
    detail["note"] = "noise from before the JPEG compression, read from the file's DCT coefficients"
    confidence = min(1.0, 0.5 + (sigma - floor) / floor)
    method = "JPEG coefficients: nonzero rate in the flattest blocks (noise before compression)"
    return Finding("noise", True, round(sigma, 3), float(confidence), method, detail)


# ------------------------------------------------------------------------------------------- haze, rain

_HAZE_WINDOW = 15
_HAZE_THRESHOLD = 0.55  # mean dark channel (0..1) from which an image measures hazy
_HAZE_CLEAR = 0.35  # below this, not hazy; in between "unknown" (bright or pale scenes overlap degrade.haze)
# Calibrated on CBSD68 clean vs restorekit.degrade.haze (seeded): from 0.55 no clean image measures hazy
# (16 % of the hazy ones do); below 0.35 sit 93 % of the clean and 12 % of the hazy ones. See docs/auto.md.


def _haze(rgb: np.ndarray) -> Finding:
    if rgb.shape[0] != 3:
        return Finding("haze", None, None, 0.0, "dark channel needs colour", {})
    x = np.clip(rgb / 255.0, 0.0, 1.0).min(axis=0)
    r, k = _HAZE_WINDOW // 2, _HAZE_WINDOW
    pad = np.pad(x, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view
    dark = win(win(pad, k, axis=1).min(axis=-1), k, axis=0).min(axis=-1)  # the k x k minimum, separably
    score = float(dark.mean())
    detail = {
        "dark_channel_mean": round(score, 4),
        "hazy_from": _HAZE_THRESHOLD,
        "clear_below": _HAZE_CLEAR,
        "window": _HAZE_WINDOW,
    }
    present: bool | None
    if score >= _HAZE_THRESHOLD:
        present, confidence = True, min(1.0, 0.5 + (score - _HAZE_THRESHOLD) / 0.2)
    elif score < _HAZE_CLEAR:
        present, confidence = False, min(1.0, 0.5 + (_HAZE_CLEAR - score) / 0.2)
    else:
        present, confidence = None, 0.0
        detail["note"] = "a bright or pale scene and thin haze look alike to the dark channel"
    return Finding("haze", present, round(score, 4), float(confidence), "dark channel prior", detail)


def _rain(rgb: np.ndarray) -> Finding:
    return Finding("rain", None, None, 0.0, "no reliable detector", {})


# ------------------------------------------------------------------------------------------------ input

_ACCEPTED = (
    "pass a path, a PIL image, a numpy array (HW/HWC, uint8, uint16 or float in [0, 1]) or a float tensor "
    "(CHW or 1CHW in [0, 1])"
)


def _tensor_planar(x: torch.Tensor) -> rkimage.Planar:
    if x.device.type == "meta":
        raise InputError("the input tensor is on the meta device: it has a shape but no pixels; pass real data")
    if x.layout != torch.strided:
        raise InputError(f"tensor inputs must be dense, not {x.layout}; call .to_dense() first")
    if x.is_complex() or not torch.is_floating_point(x):
        raise InputError(f"tensor inputs must be float in [0, 1], got {x.dtype}; divide by 255 (or 65535) first")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"analyze measures one image; got a batch of {x.shape[0]}: pass each image (x[i])")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3) or x.shape[1] < 1 or x.shape[2] < 1:
        raise InputError(f"tensor of shape {tuple(x.shape)} is not an image; {_ACCEPTED}")
    return rkimage.Planar(x.detach().to("cpu", torch.float32).contiguous(), None, 32)


def _load(image: Any) -> tuple[rkimage.Planar, dict[str, Any] | None, str | None]:
    """(pixels, the JPEG header when the input is a JPEG file or a PIL image decoded from one, the path)."""
    if isinstance(image, (str, os.PathLike)):
        data = rkimage.read_bytes(image)
        header = None
        try:
            with Image.open(io.BytesIO(data)) as img:
                header = _jpeg_header(img)
        except Exception:  # noqa: BLE001 -- read_image below says what is wrong with the file
            header = None
        return rkimage.read_image(image), header, os.fspath(image)
    if isinstance(image, Image.Image):
        return rkimage.pil_to_planar(image), _jpeg_header(image), None
    if isinstance(image, np.ndarray):
        return rkimage.numpy_to_planar(image), None, None
    if isinstance(image, torch.Tensor):
        return _tensor_planar(image), None, None
    if isinstance(image, rkimage.Planar):
        return image, None, None
    raise InputError(f"cannot analyse an object of type {type(image).__name__}; {_ACCEPTED}")


def analyze(image: Any) -> Analysis:
    """Measure ``image``'s degradations (see the module docstring).

    ``image``: a path, a PIL image, a numpy array (HW/HWC: uint8, uint16, or float in [0, 1]) or a float tensor
    (CHW, 1CHW). Alpha is ignored. Values are measured on the 0..255 scale whatever the input's bit depth.
    """
    planar, header, source = _load(image)
    planes = planar.color.detach().to("cpu", torch.float64).numpy() * 255.0
    if not np.isfinite(planes).all():
        raise InputError("the image holds NaN or infinite values; replace them (e.g. numpy.nan_to_num) first")
    if min(planes.shape[1:]) < 8:
        raise InputError(f"a {planes.shape[1]}x{planes.shape[2]} image is too small to analyse (at least 8x8)")
    c = planes.shape[0]
    luma = planes[0] if c == 1 else np.tensordot(np.array(GREY_WEIGHTS), planes, axes=1)
    jpeg = _jpeg_from_header(header) if header is not None else _jpeg_from_pixels(luma)
    noise = _noise(planes)
    if header is not None:
        noise = _with_noise_under_jpeg(noise, jpeg, luma, planes, header)
    findings = (jpeg, noise, _haze(planes), _rain(planes))
    return Analysis(findings, (int(planes.shape[1]), int(planes.shape[2])), c, source)
