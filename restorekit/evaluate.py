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

Inpainting and colourisation models (those that take ``mask=``) are measured on clean images with a masked
spec: ``mask:0.5`` (half the pixels missing) or ``hints:0.03`` (3 % of the pixels keep their colour). The mask
is drawn per image from the same seed as any other degradation, so a model and a baseline see identical masks.

The model is a registered name (its published weights, or ``weights=PATH`` for your own), or a method of the
catalogue :mod:`restorekit.methods` (:data:`BASELINE_TASKS` says which tasks each baseline stands for):

* ``bicubic`` (SR): MATLAB ``imresize`` of the LR input by the scale;
* ``identity`` (any task): the degraded input itself; for ``mask:`` the input as an inpainting network sees
  it, missing pixels at 0.5 (mid-grey); for ``hints:`` the grey image with the known colours pasted in;
* ``nearest`` (inpainting, ``mask:``): each missing pixel copies its nearest known pixel
  (:func:`nearest_fill`);
* ``l0smooth[:LAMBDA]`` (any unmasked task): L0 smoothing of the input (:mod:`restorekit.filters`).

The convention defaults from the task (:mod:`restorekit.metrics`: SR ``y_shave_scale``, denoising
``full_image``, JPEG and deraining ``y_full``, otherwise (inpainting and colourisation included)
``full_image``) and is printed with every table.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .degrade import Degradation, parse
from .errors import InputError, UnknownModelError, WeightsNotAvailableError
from .folders import find_pairs  # the folder layouts live there; importable from here as before
from .image import read_image
from .methods import METHODS, bind, is_method, nearest_fill, unknown_name
from .metrics import DENOISE, JPEG, SR, Convention, get_convention, psnr, ssim
from .options import RunOptions, run_options
from .registry import Metric

__all__ = ["evaluate", "EvalResult", "ImageScore", "find_pairs", "nearest_fill", "BASELINES", "BASELINE_TASKS"]

# The catalogue's baselines (restorekit.methods), and the tasks each stands in for (None: any task; it then takes
# the task of the degradation).
BASELINES = tuple(name for name, m in METHODS.items() if m.kind == "baseline")
BASELINE_TASKS: dict[str, tuple[str, ...] | None] = {name: METHODS[name].tasks for name in BASELINES}
_TASK_CONVENTIONS = {"denoise": DENOISE, "jpeg": JPEG, "derain": JPEG, "inpaint": DENOISE, "colorize": DENOISE}

Restore = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


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

    def write_json(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """The result as JSON, written atomically; ``overwrite=False`` refuses to replace an existing file."""
        from .image import atomic_write

        p = Path(path)
        data = (json.dumps(self.to_dict(), indent=2) + "\n").encode()
        atomic_write(p, lambda f: f.write(data), overwrite=overwrite)
        return p

    def write_csv(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """One row per image and a last ``mean`` row; the convention is in the column names. Written atomically;
        ``overwrite=False`` refuses to replace an existing file."""
        import io

        from .image import atomic_write

        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["image", f"psnr_{self.convention.name}", f"ssim_{self.convention.name}"])
        w.writerows([r.name, f"{r.psnr:.4f}", f"{r.ssim:.6f}"] for r in self.images)
        w.writerow(["mean", f"{self.psnr:.4f}", f"{self.ssim:.6f}"])
        data = buf.getvalue().encode()
        p = Path(path)
        atomic_write(p, lambda f: f.write(data), overwrite=overwrite)
        return p

    def as_metrics(self, dataset: str) -> tuple[Metric, Metric]:
        """The means as registry :class:`~restorekit.registry.Metric` records (``source="measured"``)."""
        return (
            Metric(dataset, "psnr", round(self.psnr, 2), self.convention.name, "measured"),
            Metric(dataset, "ssim", round(self.ssim, 4), self.convention.name, "measured"),
        )


def _image_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)


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
    dtype: str | torch.dtype = "auto",
    tile: int | str | None = "auto",
    seed: int = 0,
    allow_unpinned: bool | None = None,
    progress: bool | None = None,
    target: str | None = None,
    compile: bool = False,  # noqa: A002 - Restorer's keyword
) -> EvalResult:
    """Measure ``model`` (a registered name or a method: ``bicubic``, ``identity``, ``nearest``, ``l0smooth``)
    on the benchmark folder ``data``.

    ``task``/``scale`` narrow an architecture name (and tell a baseline what it stands in for);
    ``degradation`` is required for a folder of clean images unless the task is SR (``mask:0.5`` or
    ``hints:0.03`` for models that take a mask); ``convention`` is a
    :class:`~restorekit.metrics.Convention` or a preset name (default: from the task). ``pretrained=False``
    measures a randomly initialised network (tests). ``target`` (a :func:`restorekit.filters.parse_filter`
    spec such as ``l0smooth:0.02``) scores against that filter's output on each clean image instead of the
    clean image itself, with the clean image as input unless ``degradation`` says otherwise (filter
    imitation: ``spatial_rnn.smooth_l0``).

    ``device``, ``dtype``, ``allow_unpinned`` and ``progress`` mean what they mean for
    :class:`~restorekit.Restorer` (:mod:`restorekit.options`); ``progress`` covers the weights' download, the
    tiles and the images (None: bars when stderr is a terminal). They are checked for the baselines too.
    ``compile=True`` runs a network through ``torch.compile`` (:class:`~restorekit.Restorer`'s ``compile=``).
    """
    options = run_options(device, dtype, allow_unpinned, progress)
    deg = parse(degradation) if isinstance(degradation, str) else degradation
    if deg is not None and deg.scale != 1:
        if scale is not None and scale != deg.scale:
            raise InputError(f"--scale {scale} contradicts the degradation {deg}")
        scale = deg.scale
    restore, task, scale, label, condition = _model(
        model, task, scale, weights, pretrained, options, tile, deg, compile=compile
    )
    _check_condition(label, condition, deg)
    layout, pairs = find_pairs(data, scale if scale > 1 else None)
    clean = layout == "clean images"
    if clean and deg is None and target is None:
        if task != "sr":
            raise InputError(
                f"{data} holds clean images: say how to degrade them with --degrade, e.g. noise:25 (Gaussian, "
                "sigma on 0-255), jpeg:10, bicubic:4, gaussian_blur, motion_blur, rain, haze, mask:0.5, hints:0.03"
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

    for name, inp_path, tgt_path in tqdm(pairs, desc=f"eval {label}", unit="img", disable=options.bar_disabled):
        truth = read_image(tgt_path).color[None]
        mask = None
        if inp_path is None:
            truth = _modcrop(truth, scale)
            if deg is not None and deg.condition == "hints" and truth.shape[1] != 3:
                raise InputError(f"{name} is a grey image; hints:RATIO (colourisation) needs colour images")
            if deg is None:
                x = truth
            elif deg.condition is None:
                x = deg(truth, seed=_image_seed(seed, name))
            else:
                x, mask = deg.with_mask(truth, seed=_image_seed(seed, name))
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
        y = restore(x, mask)
        result.images.append(ImageScore(name, float(psnr(y, truth, conv)[0]), float(ssim(y, truth, conv)[0])))
    return result


def _str(deg: Degradation | None) -> str | None:
    return None if deg is None else str(deg)


def _convention(convention: str | Convention | None, task: str, scale: int) -> Convention:
    if isinstance(convention, Convention):
        return convention
    if convention is not None:
        return get_convention(convention, scale)
    return SR(scale) if task == "sr" else _TASK_CONVENTIONS.get(task, DENOISE)


def _check_condition(label: str, condition: str | None, deg: Degradation | None) -> None:
    """A model that takes a mask needs the matching masked spec, and a masked spec needs such a model."""
    if deg is not None and deg.condition is not None and condition is None:
        raise InputError(
            f"{label} takes no mask, so it cannot be measured on {deg}; masked specs are for inpainting and "
            "colourisation models (spatial_rnn.inpaint with mask:RATIO, spatial_rnn.colorize with hints:RATIO) "
            "and the baselines nearest (mask:) and identity"
        )
    if condition is not None and (deg is None or deg.condition != condition):
        want = {
            "mask": "mask:0.5 (the fraction of pixels missing)",
            "hints": "hints:0.03 (the fraction with known colour)",
        }
        given = f"not {deg}" if deg is not None else "without one there is no mask to give it"
        raise InputError(
            f"{label} takes {'a mask of missing pixels' if condition == 'mask' else 'colour hints'}: measure it on a "
            f"folder of clean images with --degrade {want[condition]}; {given}"
        )


def _model(
    model: str,
    task: str | None,
    scale: int | None,
    weights: str | os.PathLike | None,
    pretrained: bool,
    options: RunOptions,
    tile: int | str | None,
    deg: Degradation | None = None,
    compile: bool = False,  # noqa: A002 - Restorer's keyword
) -> tuple[Restore, str, int, str, str | None]:
    """(restore function on (1, C, H, W) and a (1, 1, H, W) mask or None, task, scale, label, condition).

    ``condition`` is the masked spec kind the model needs (``"mask"``, ``"hints"``), None for none.
    """
    if is_method(model):  # the catalogue: bicubic, identity, nearest, l0smooth (restorekit.methods)
        if compile is not False:
            raise InputError(f"{model} is a method without a network: compile does not apply")
        masked = deg.condition if deg is not None else None
        bound = bind(model, task=task, scale=scale, condition=masked, device=options.device, context=_str(deg))
        return bound.restore, bound.task, bound.scale, bound.label, bound.condition
    from .registry import get_record
    from .restorer import Restorer

    try:
        record = get_record(model, task, scale=scale)
    except UnknownModelError as err:
        raise unknown_name(err, model) from None
    if weights is None and pretrained and not record.published:
        raise WeightsNotAvailableError(
            f"{record.name} has no published weights yet, so there is nothing to evaluate; pass --weights PATH "
            f"(weights=PATH) to measure your own, or a baseline model: {', '.join(BASELINES)}"
        )
    restorer = Restorer(
        record.name,
        weights=weights,
        pretrained=pretrained if weights is None else True,
        device=options.device,
        dtype=options.dtype,
        tile=tile,
        allow_unpinned=options.allow_unpinned,
        progress=options.progress,
        compile=compile,
    )
    from .image import Planar

    def run(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # The benchmarks' noise is not clipped; the network sees it clamped to [0, 1], as an image file holds
        # it (the Restorer refuses floats outside [0, 1] rather than clamping them without a word).
        planar = Planar(color=x[0].float().clamp(0, 1), alpha=None, bit_depth=32)
        return restorer.restore_planar(planar, mask=mask).color[None]

    condition = restorer.condition  # declared by the architecture for the record's config
    label = record.name if weights is None else f"{record.name} ({weights})"
    return run, record.task, record.scale, label, condition
