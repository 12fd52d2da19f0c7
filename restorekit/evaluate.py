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

The model is a registered name (its published weights, or ``weights=PATH`` for your own), or a baseline
(:data:`BASELINE_TASKS` says which tasks each stands for):

* ``bicubic`` (SR): MATLAB ``imresize`` of the LR input by the scale;
* ``identity`` (any task): the degraded input itself; for ``mask:`` the input as an inpainting network sees
  it, missing pixels at 0.5 (mid-grey); for ``hints:`` the grey image with the known colours pasted in;
* ``nearest`` (inpainting, ``mask:``): each missing pixel copies its nearest known pixel
  (:func:`nearest_fill`).

The convention defaults from the task (:mod:`restorekit.metrics`: SR ``y_shave_scale``, denoising
``full_image``, JPEG and deraining ``y_full``, otherwise (inpainting and colourisation included)
``full_image``) and is printed with every table.
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
from .options import RunOptions, run_options
from .registry import Metric
from .resize import imresize

__all__ = ["evaluate", "EvalResult", "ImageScore", "find_pairs", "nearest_fill", "BASELINES", "BASELINE_TASKS"]

BASELINES = ("bicubic", "identity", "nearest")
# The tasks each baseline stands in for (None: any task; it then takes the task of the degradation).
BASELINE_TASKS: dict[str, tuple[str, ...] | None] = {"bicubic": ("sr",), "identity": None, "nearest": ("inpaint",)}
_TASK_CONVENTIONS = {"denoise": DENOISE, "jpeg": JPEG, "derain": JPEG, "inpaint": DENOISE, "colorize": DENOISE}
_CONDITION_TASKS = {"mask": "inpaint", "hints": "colorize"}  # a masked spec's condition -> the task it measures
_BIG = 1 << 40  # "no known pixel" as a squared distance; far below int64's limit even with a dx^2 added

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


def nearest_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the missing pixels of ``x`` (N, C, H, W) by copying the exactly nearest (Euclidean) known pixel.

    ``mask`` is (N or 1, 1, H, W), known where > 0.5. Ties between equally near known pixels go to the one at
    the smallest horizontal offset, then to the one on the left, then to the one above. Known pixels are kept;
    an image with no known pixel at all is filled with 0.5 (there is nothing to copy).

    Exact and separable: every column's nearest known pixel for each row (two running scans), then for every
    pixel the best column at horizontal offset 0, 1, 2, ..., stopping once the offset alone is farther than
    every pixel's best so far. Each step is one pass over the image, and there are as many steps as the widest
    hole needs (a few for scattered missing pixels), so large holes are handled without a per-pixel search.
    """
    if x.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != x.shape[-2:]:
        raise InputError(
            f"nearest_fill needs x (N, C, H, W) and a mask (N, 1, H, W) of the same size, got {tuple(x.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if mask.shape[0] not in (1, x.shape[0]):
        raise InputError(f"nearest_fill: {mask.shape[0]} masks for {x.shape[0]} images; give one, or one per image")
    known = (mask > 0.5).expand(x.shape[0], -1, -1, -1)[:, 0].cpu()
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        index = _nearest_index(known[i])
        if index is None:
            out[i] = 0.5
            continue
        rows, cols = index[0].to(x.device), index[1].to(x.device)
        out[i] = x[i][:, rows, cols]
    return out


def _nearest_index(known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(row, column) of the nearest known pixel of every pixel of a (H, W) bool map (see :func:`nearest_fill`)."""
    h, w = known.shape
    if not bool(known.any()):
        return None
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    above = torch.where(known, rows, -1).cummax(0).values  # the nearest known row at or above, -1: none
    below = torch.where(known, rows, h).flip(0).cummin(0).values.flip(0)  # at or below, h: none
    up = torch.where(above >= 0, rows - above, _BIG)
    down = torch.where(below < h, below - rows, _BIG)
    take_up = up <= down  # a tie within a column goes to the pixel above
    dy = torch.where(take_up, up, down)
    col_d2 = torch.where(dy < _BIG, dy * dy, _BIG)  # squared distance to the column's nearest known pixel
    col_row = torch.where(take_up, above, below)
    best, src_row, src_col = col_d2.clone(), col_row.clone(), cols.clone()
    for dx in range(1, w):
        if dx * dx >= int(best.max()):
            break  # no column this far can be strictly nearer for any pixel
        # the column dx to the left first, then dx to the right: strict improvements only (the tie rule)
        for to, frm in ((slice(dx, None), slice(None, w - dx)), (slice(None, w - dx), slice(dx, None))):
            cand = col_d2[:, frm] + dx * dx
            better = cand < best[:, to]
            best[:, to] = torch.where(better, cand, best[:, to])
            src_row[:, to] = torch.where(better, col_row[:, frm], src_row[:, to])
            src_col[:, to] = torch.where(better, cols[:, frm], src_col[:, to])
    return src_row, src_col


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
) -> EvalResult:
    """Measure ``model`` (a registered name, ``bicubic`` or ``identity``) on the benchmark folder ``data``.

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
    """
    options = run_options(device, dtype, allow_unpinned, progress)
    deg = parse(degradation) if isinstance(degradation, str) else degradation
    if deg is not None and deg.scale != 1:
        if scale is not None and scale != deg.scale:
            raise InputError(f"--scale {scale} contradicts the degradation {deg}")
        scale = deg.scale
    restore, task, scale, label, condition = _model(model, task, scale, weights, pretrained, options, tile, deg)
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
) -> tuple[Restore, str, int, str, str | None]:
    """(restore function on (1, C, H, W) and a (1, 1, H, W) mask or None, task, scale, label, condition).

    ``condition`` is the masked spec kind the model needs (``"mask"``, ``"hints"``), None for none.
    """
    masked = deg.condition if deg is not None else None
    if model == "bicubic":
        if not scale or scale < 2 or (task not in (None, "sr")):
            raise InputError("the bicubic baseline upsamples SR inputs: give --scale 2, 3, 4 ... (and task sr)")
        s = int(scale)

        def upsample(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            # As MATLAB's imresize on the uint8 LR image when the input is 8-bit (rounded after each pass).
            return imresize(x, s, quantize=_on_8bit_grid(x)).clamp(0, 1)

        return upsample, "sr", s, f"bicubic x{s}", None
    if model == "identity":
        if scale not in (None, 1):
            raise InputError("the identity baseline returns its input, so it has no scale; for SR use bicubic")
        if masked is None:
            return (lambda x, mask: x), task or "denoise", 1, "identity", None
        masked_task = _CONDITION_TASKS[masked]
        if task not in (None, masked_task):
            raise InputError(f"the degradation {deg} makes a {masked_task} benchmark, not {task}; drop --task {task}")

        def identity(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            assert mask is not None
            # hints: the input already is the grey image with the known colours; mask: holes at mid-grey,
            # as the inpainting network sees them.
            return x if masked == "hints" else x * mask + 0.5 * (1 - mask)

        return identity, masked_task, 1, "identity", masked
    if model == "nearest":
        if masked != "mask" or task not in (None, "inpaint") or scale not in (None, 1):
            raise InputError(
                "the nearest baseline fills missing pixels (inpainting): use it on clean images with --degrade "
                f"mask:RATIO, e.g. mask:0.5{f', not {deg}' if deg is not None else ''}"
            )

        def fill(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            assert mask is not None
            return nearest_fill(x, mask)

        return fill, "inpaint", 1, "nearest", "mask"
    from .registry import get_record
    from .restorer import Restorer

    record = get_record(model, task, scale=scale)
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
