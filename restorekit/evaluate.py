"""Run a model (or a baseline) over a benchmark folder and report PSNR/SSIM under a named convention.

>>> result = evaluate("bicubic", "../shared/data/sr/Set5", scale=4)  # doctest: +SKIP
>>> print(result.table())                                             # doctest: +SKIP

The folder is one of:

* paired: ``x{scale}/HR`` + ``x{scale}/LR`` (the SR benchmarks), ``HR`` + ``LR``, or ``input`` + ``target``;
  files are paired by name;
* clean images only, plus a degradation spec (:func:`restorekit.degrade.parse`: ``noise:25``, ``jpeg:10``,
  ``bicubic:4``, ...) applied with a per-image seed derived from ``seed`` and the file name, so a run is
  reproducible and a subset gets the same inputs. For SR, clean images default to ``bicubic:{scale}``
  (MATLAB imresize, as the published LR files were made) after cropping them to a multiple of the scale.

The model is a registered name (its published weights, or ``weights=PATH`` for your own), or a baseline:
``bicubic`` (SR: MATLAB ``imresize`` of the LR input by the scale) or ``identity`` (the degraded input
itself). The convention defaults from the task (:mod:`restorekit.metrics`: SR ``y_shave_scale``, denoising
``full_image``, JPEG and deraining ``y_full``, otherwise ``full_image``) and is printed with every table.
"""

from __future__ import annotations

import csv
import json
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .degrade import Degradation, parse
from .errors import InputError, WeightsNotAvailableError
from .image import IMAGE_EXTENSIONS, read_image
from .metrics import DENOISE, JPEG, SR, Convention, get_convention, psnr, ssim
from .registry import Metric
from .resize import imresize

__all__ = ["evaluate", "EvalResult", "ImageScore", "find_pairs", "BASELINES"]

BASELINES = ("bicubic", "identity")
_TASK_CONVENTIONS = {"denoise": DENOISE, "jpeg": JPEG, "derain": JPEG}


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass
class EvalResult:
    """Per-image scores and their means, with everything needed to say how they were measured."""

    model: str
    data: str
    layout: str  # which folder layout was found
    degradation: str | None  # the spec applied to clean images, None for paired folders
    convention: Convention
    seed: int
    images: list[ImageScore] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        """Mean PSNR over the images (the mean of per-image dB values, as published tables)."""
        return sum(r.psnr for r in self.images) / len(self.images)

    @property
    def ssim(self) -> float:
        return sum(r.ssim for r in self.images) / len(self.images)

    def table(self) -> str:
        """A per-image table, the mean, and the convention named."""
        width = max([len("image"), *(len(r.name) for r in self.images)])
        lines = [f"{'image':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}"]
        lines += [f"{r.name:<{width}}  {r.psnr:9.2f}  {r.ssim:6.4f}" for r in self.images]
        lines.append(f"{'mean':<{width}}  {self.psnr:9.2f}  {self.ssim:6.4f}  ({len(self.images)} images)")
        what = f"degradation {self.degradation} (seed {self.seed})" if self.degradation else "paired inputs"
        lines.append(f"model {self.model} on {self.data} [{self.layout}], {what}")
        lines.append(f"convention {self.convention.describe()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "layout": self.layout,
            "degradation": self.degradation,
            "seed": self.seed,
            "convention": {**asdict(self.convention), "description": self.convention.describe()},
            "mean": {"psnr": self.psnr, "ssim": self.ssim, "images": len(self.images)},
            "images": [asdict(r) for r in self.images],
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One row per image and a last ``mean`` row; the convention is in the column names."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", f"psnr_{self.convention.name}", f"ssim_{self.convention.name}"])
            w.writerows([r.name, f"{r.psnr:.4f}", f"{r.ssim:.6f}"] for r in self.images)
            w.writerow(["mean", f"{self.psnr:.4f}", f"{self.ssim:.6f}"])
        return p

    def as_metrics(self, dataset: str) -> tuple[Metric, Metric]:
        """The means as registry :class:`~restorekit.registry.Metric` records (``source="measured"``)."""
        return (
            Metric(dataset, "psnr", round(self.psnr, 2), self.convention.name, "measured"),
            Metric(dataset, "ssim", round(self.ssim, 4), self.convention.name, "measured"),
        )


def _images(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def find_pairs(data: str | os.PathLike, scale: int | None = None) -> tuple[str, list[tuple[str, Path | None, Path]]]:
    """(layout, [(name, input path or None for clean images, target path)]) for a benchmark folder."""
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass --data with a folder of images or of HR/LR pairs")
    candidates = []
    if scale is not None:
        candidates.append((f"x{scale}/LR", f"x{scale}/HR"))
    candidates += [("LR", "HR"), ("input", "target")]
    for inp, tgt in candidates:
        if (root / inp).is_dir() and (root / tgt).is_dir():
            inputs, targets = _images(root / inp), _images(root / tgt)
            missing = sorted(set(targets) ^ set(inputs))
            if missing:
                raise InputError(
                    f"{root}: {inp}/ and {tgt}/ must hold the same file names; unpaired: {', '.join(missing[:5])}"
                )
            if not targets:
                raise InputError(f"{root / tgt} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            return f"{tgt} + {inp}", [(n, inputs[n], targets[n]) for n in targets]
    scales = sorted(p.name for p in root.glob("x*") if p.is_dir() and re.fullmatch(r"x\d+", p.name))
    clean = _images(root)
    if not clean:
        hint = f"; it has {', '.join(scales)}: pass --scale" if scales and scale is None else ""
        raise InputError(
            f"{root} holds no images and no paired folders (x{{scale}}/HR + x{{scale}}/LR, HR + LR, "
            f"input + target){hint}"
        )
    return "clean images", [(n, None, p) for n, p in clean.items()]


def _image_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)


def _on_8bit_grid(x: torch.Tensor) -> bool:
    v = x * 255
    return bool((v - v.round()).abs().max() < 1e-4)


def _modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def evaluate(
    model: str,
    data: str | os.PathLike,
    *,
    task: str | None = None,
    scale: int | None = None,
    degradation: str | Degradation | None = None,
    convention: str | Convention | None = None,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    device: str | torch.device = "auto",
    tile: int | str | None = "auto",
    seed: int = 0,
    progress: bool = True,
    target: str | None = None,
) -> EvalResult:
    """Measure ``model`` (a registered name, ``bicubic`` or ``identity``) on the benchmark folder ``data``.

    ``task``/``scale`` narrow an architecture name (and tell a baseline what it stands in for);
    ``degradation`` is required for a folder of clean images unless the task is SR; ``convention`` is a
    :class:`~restorekit.metrics.Convention` or a preset name (default: from the task). ``pretrained=False``
    measures a randomly initialised network (tests). ``target`` (a :func:`restorekit.filters.parse_filter`
    spec such as ``l0smooth:0.02``) scores against that filter's output on each clean image instead of the
    clean image itself, with the clean image as input unless ``degradation`` says otherwise (filter
    imitation: ``spatial_rnn.smooth_l0``).
    """
    deg = parse(degradation) if isinstance(degradation, str) else degradation
    if deg is not None and deg.scale != 1:
        if scale is not None and scale != deg.scale:
            raise InputError(f"--scale {scale} contradicts the degradation {deg}")
        scale = deg.scale
    restore, task, scale, label = _model(model, task, scale, weights, pretrained, device, tile)
    layout, pairs = find_pairs(data, scale if scale > 1 else None)
    clean = layout == "clean images"
    if clean and deg is None and target is None:
        if task != "sr":
            raise InputError(
                f"{data} holds clean images: say how to degrade them with --degrade, e.g. noise:25 (Gaussian, "
                "sigma on 0-255), jpeg:10, bicubic:4, gaussian_blur, motion_blur, rain, haze"
            )
        deg = Degradation("bicubic", {"scale": scale})
    if not clean and deg is not None:
        raise InputError(f"{data} holds paired inputs ({layout}); --degrade applies only to folders of clean images")
    if deg is not None and deg.scale != scale:
        raise InputError(f"{label} works at x{scale}, but the degradation {deg} downscales by {deg.scale}")
    reference = None
    if target is not None:
        from .filters import parse_filter

        if not clean:
            raise InputError(f"{data} holds paired inputs ({layout}); --target filters folders of clean images")
        if scale != 1:
            raise InputError(f"--target compares at the input's size; {label} works at x{scale}")
        reference = parse_filter(target)
    conv = _convention(convention, task, scale)
    described = None if deg is None else str(deg)
    if reference is not None:
        described = f"target {target}" + ("" if deg is None else f", input {deg}")
    result = EvalResult(label, str(data), layout, described, conv, seed)
    from tqdm.auto import tqdm

    for name, inp_path, tgt_path in tqdm(pairs, desc=f"eval {label}", unit="img", disable=not progress):
        truth = read_image(tgt_path).color[None]
        if inp_path is None:
            truth = _modcrop(truth, scale)
            x = truth if deg is None else deg(truth, seed=_image_seed(seed, name))
            if reference is not None:
                truth = reference(truth)
        else:
            x = read_image(inp_path).color[None]
            h, w = x.shape[-2] * scale, x.shape[-1] * scale
            if not (h <= truth.shape[-2] < h + scale and w <= truth.shape[-1] < w + scale):
                raise InputError(
                    f"{name}: input {tuple(x.shape[-2:])} x{scale} does not match the target {tuple(truth.shape[-2:])}"
                )
            truth = truth[..., :h, :w]
        y = restore(x)
        result.images.append(ImageScore(name, float(psnr(y, truth, conv)[0]), float(ssim(y, truth, conv)[0])))
    return result


def _convention(convention: str | Convention | None, task: str, scale: int) -> Convention:
    if isinstance(convention, Convention):
        return convention
    if convention is not None:
        return get_convention(convention, scale)
    return SR(scale) if task == "sr" else _TASK_CONVENTIONS.get(task, DENOISE)


def _model(
    model: str,
    task: str | None,
    scale: int | None,
    weights: str | os.PathLike | None,
    pretrained: bool,
    device: str | torch.device,
    tile: int | str | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str, int, str]:
    """(restore function on (1, C, H, W), task, scale, label)."""
    if model == "bicubic":
        if not scale or scale < 2 or (task not in (None, "sr")):
            raise InputError("the bicubic baseline upsamples SR inputs: give --scale 2, 3, 4 ... (and task sr)")
        s = int(scale)

        def upsample(x: torch.Tensor) -> torch.Tensor:
            # As MATLAB's imresize on the uint8 LR image when the input is 8-bit (rounded after each pass).
            return imresize(x, s, quantize=_on_8bit_grid(x)).clamp(0, 1)

        return upsample, "sr", s, f"bicubic x{s}"
    if model == "identity":
        if scale not in (None, 1):
            raise InputError("the identity baseline returns its input, so it has no scale; for SR use bicubic")
        return (lambda x: x), task or "denoise", 1, "identity"
    from .registry import get_record
    from .restorer import Restorer

    record = get_record(model, task, scale=scale)
    if weights is None and pretrained and not record.published:
        raise WeightsNotAvailableError(
            f"{record.name} has no published weights yet, so there is nothing to evaluate; pass --weights PATH "
            "(weights=PATH) to measure your own, or a baseline model: bicubic, identity"
        )
    restorer = Restorer(
        record.name, weights=weights, pretrained=pretrained if weights is None else True, device=device, tile=tile
    )
    from .image import Planar

    def run(x: torch.Tensor) -> torch.Tensor:
        return restorer.restore_planar(Planar(color=x[0].float(), alpha=None, bit_depth=32)).color[None]

    label = record.name if weights is None else f"{record.name} ({weights})"
    return run, record.task, record.scale, label
