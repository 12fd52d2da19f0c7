"""The catalogue of image-to-image methods that need no weights: baselines and classical filters.

``restorekit run METHOD ...`` and ``restorekit eval METHOD ...`` accept every name here, with the parameter
syntax of :mod:`restorekit.specs` (``l0smooth:0.02``, ``l0smooth:lam=0.01,kappa=1.5``):

=============  =========================================================================================
``bicubic``    MATLAB ``imresize`` upsampling by the SR scale (``--scale 2, 3, 4 ...``)
``identity``   the input itself; with a mask (evaluation on ``mask:``) the holes at mid-grey, as an
               inpainting network sees them; on ``hints:`` the grey image with the known colours
``nearest``    each missing pixel copies its exactly nearest known pixel (:func:`nearest_fill`); needs a mask
``l0smooth``   L0 gradient-minimisation smoothing (:mod:`restorekit.filters`), ``lam``, ``kappa``, ``beta_max``
=============  =========================================================================================

Each :class:`Method` declares what it takes (a scale, a mask, its parameters) and binds, for one use, to a
function of one call shape: ``restore(x, mask)`` with ``x`` a float (N, C, H, W) batch in [0, 1] and ``mask``
(N or 1, 1, H, W), 1 = known, or None.

>>> bound = bind("bicubic", scale=2)
>>> bound.restore(torch.rand(1, 3, 8, 8), None).shape, bound.label
(torch.Size([1, 3, 16, 16]), 'bicubic x2')
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError, UnknownModelError
from .resize import imresize
from .specs import parse_params

__all__ = [
    "Method",
    "Bound",
    "MethodRunner",
    "METHODS",
    "list_methods",
    "is_method",
    "bind",
    "runner",
    "nearest_fill",
    "unknown_name",
]

Restore = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
_BIG = 1 << 40  # "no known pixel" as a squared distance; far below int64's limit even with a dx^2 added
_CONDITION_TASKS = {"mask": "inpaint", "hints": "colorize"}  # a masked spec's condition -> the task it measures


@dataclass(frozen=True)
class Bound:
    """A method made ready for one use: the function, the task and scale it stands for, its label, and the
    masked spec kind it needs (``"mask"``, ``"hints"``, None for none)."""

    restore: Restore
    task: str
    scale: int
    label: str
    condition: str | None


@dataclass(frozen=True)
class Method:
    """One catalogue entry: its facts, its parameters (the spec grammar's table row) and its binder."""

    name: str
    kind: str  # "baseline" or "classical filter", as messages name it
    summary: str
    tasks: tuple[str, ...] | None  # the tasks it stands in for; None: any (it takes the degradation's)
    upscales: bool  # takes an SR scale >= 2 and upsamples by it; otherwise the output has the input's size
    conditions: tuple[str | None, ...]  # what it runs on: None (no mask), "mask" (holes), "hints" (colour hints)
    positional: str = ""
    params: Mapping[str, type] = dataclasses.field(default_factory=dict)
    make: Callable[..., Bound] | None = dataclasses.field(default=None, repr=False)

    @property
    def needs_mask(self) -> bool:
        return None not in self.conditions


# ------------------------------------------------------------------------------------------- the methods


def _on_8bit_grid(x: torch.Tensor) -> bool:
    v = x * 255
    return bool((v - v.round()).abs().max() < 1e-4)


def _bicubic(
    task: str | None, scale: int | None, masked: str | None, params: dict, device: Any, context: str | None
) -> Bound:
    if not scale or scale < 2 or (task not in (None, "sr")):
        raise InputError("the bicubic baseline upsamples SR inputs: give --scale 2, 3, 4 ... (and task sr)")
    s = int(scale)

    def upsample(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # As MATLAB's imresize on the uint8 LR image when the input is 8-bit (rounded after each pass).
        return imresize(x, s, quantize=_on_8bit_grid(x)).clamp(0, 1)

    return Bound(upsample, "sr", s, f"bicubic x{s}", None)


def _identity(
    task: str | None, scale: int | None, masked: str | None, params: dict, device: Any, context: str | None
) -> Bound:
    if scale not in (None, 1):
        raise InputError("the identity baseline returns its input, so it has no scale; for SR use bicubic")
    if masked is None:
        return Bound(lambda x, mask: x, task or "denoise", 1, "identity", None)
    masked_task = _CONDITION_TASKS[masked]
    if task not in (None, masked_task):
        raise InputError(f"the degradation {context} makes a {masked_task} benchmark, not {task}; drop --task {task}")

    def identity(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        assert mask is not None
        # hints: the input already is the grey image with the known colours; mask: holes at mid-grey,
        # as the inpainting network sees them.
        return x if masked == "hints" else x * mask + 0.5 * (1 - mask)

    return Bound(identity, masked_task, 1, "identity", masked)


def _nearest(
    task: str | None, scale: int | None, masked: str | None, params: dict, device: Any, context: str | None
) -> Bound:
    if masked != "mask" or task not in (None, "inpaint") or scale not in (None, 1):
        raise InputError(
            "the nearest baseline fills missing pixels (inpainting): use it on clean images with --degrade "
            f"mask:RATIO, e.g. mask:0.5{f', not {context}' if context is not None else ''} (restorekit run: --mask M)"
        )

    def fill(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        assert mask is not None
        return nearest_fill(x, mask)

    return Bound(fill, "inpaint", 1, "nearest", "mask")


def _l0smooth(
    task: str | None, scale: int | None, masked: str | None, params: dict, device: Any, context: str | None
) -> Bound:
    from .filters import L0Smooth

    if scale not in (None, 1):
        raise InputError("the l0smooth filter keeps the image size, so it has no scale; for SR use bicubic")
    smoother = L0Smooth(**params, device=device)
    return Bound(lambda x, mask: smoother(x), task or "smooth", 1, smoother.record.name, None)


def _l0_params() -> tuple[str, Mapping[str, type]]:
    from .filters import FILTERS

    positional, _, types = FILTERS["l0smooth"]
    return positional, types


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("bicubic", "baseline", "MATLAB imresize upsampling by --scale", ("sr",), True, (None,), make=_bicubic),
        Method(
            "identity",
            "baseline",
            "the input itself (masked: holes at mid-grey; hints: the grey image with its colours)",
            None,
            False,
            (None, "mask", "hints"),
            make=_identity,
        ),
        Method(
            "nearest",
            "baseline",
            "each missing pixel copies its nearest known pixel (needs a mask)",
            ("inpaint",),
            False,
            ("mask",),
            make=_nearest,
        ),
        Method(
            "l0smooth",
            "classical filter",
            "L0 gradient-minimisation smoothing: l0smooth[:LAMBDA][,kappa=K,beta_max=B]",
            None,
            False,
            (None,),
            *_l0_params(),
            make=_l0smooth,
        ),
    )
}


def list_methods() -> list[str]:
    """The catalogue's names, in catalogue order: ``['bicubic', 'identity', 'nearest', 'l0smooth']``."""
    return list(METHODS)


def is_method(spec: str) -> bool:
    """Whether ``spec`` (``name`` or ``name:params``) names a catalogue method."""
    return spec.strip().partition(":")[0] in METHODS


def _table() -> dict[str, tuple[str, Method, Mapping[str, type]]]:
    return {name: (m.positional, m, m.params) for name, m in METHODS.items()}


def parse_method(spec: str) -> tuple[Method, dict[str, Any]]:
    """``"l0smooth:0.02"`` -> (the :class:`Method`, its typed parameters), by the :mod:`restorekit.specs` grammar."""
    name, params = parse_params(spec, _table(), "method")
    return METHODS[name], params


def bind(
    spec: str,
    *,
    task: str | None = None,
    scale: int | None = None,
    condition: str | None = None,
    device: str | torch.device = "cpu",
    context: str | None = None,
) -> Bound:
    """The method ``spec`` made ready for ``task``/``scale`` and the masked spec kind ``condition`` (``"mask"``,
    ``"hints"`` or None) on ``device``. Unfit combinations are an :class:`InputError` saying what the method
    needs; ``context`` (the degradation, in evaluation) is named in those messages."""
    method, params = parse_method(spec)
    assert method.make is not None
    return method.make(task, scale, condition, params, device, context)


def unknown_name(err: UnknownModelError, name: str) -> UnknownModelError:
    """The registry's error for ``name``, adding the catalogue methods (and the close ones) that run and eval take."""
    message = str(err)
    close = difflib.get_close_matches(name.partition(":")[0], list(METHODS), n=2, cutoff=0.6)
    if close:
        hint = f" {'Or' if 'Did you mean' in message else 'Did you mean'} the method {' or '.join(map(repr, close))}?"
        marker = " Run `restorekit list`"
        message = message.replace(marker, hint + marker, 1) if marker in message else message + hint
    return UnknownModelError(f"{message} Methods without weights (run, eval): {', '.join(METHODS)}.")


# ------------------------------------------------------------------------------------------ on files


@dataclass(frozen=True)
class _MethodRecord:
    """The little of a :class:`~restorekit.registry.WeightRecord` that the batch runner shows."""

    name: str
    scale: int = 1


class MethodRunner:
    """A bound method over image files with the ``record`` / ``condition`` / ``run`` surface of a
    :class:`~restorekit.restorer.Restorer` (:class:`restorekit.batch.ImageToImage`), so
    :func:`restorekit.batch.run_batch` drives it unchanged. Alpha is
    kept (upsampled with the image by ``bicubic``), and so are bit depth and format."""

    def __init__(self, bound: Bound, device: str | torch.device = "cpu") -> None:
        from .devices import pick_device

        self.bound = bound
        self.device = pick_device(device)
        self.record = _MethodRecord(bound.label, bound.scale)
        self.condition = bound.condition  # None, or the mask it fills ('mask')

    def __repr__(self) -> str:
        return f"MethodRunner({self.bound.label!r})"

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] (and its mask) -> the result on the input's device."""
        m = None if mask is None else mask.to(self.device, x.dtype)
        return self.bound.restore(x.to(self.device), m).to(x.device)

    def run(
        self,
        x: Any,
        output: str | os.PathLike | None = None,
        *,
        overwrite: bool = True,
        mask: Any = None,
        input_range: tuple[float, float] | None = None,
    ) -> Any:
        """Apply the method to an image file (written to ``output`` when given) or a tensor; ``mask``: a mask
        file, array or tensor for a method that needs one. ``input_range`` as for :meth:`Restorer.run`."""
        from .restorer import _mask_tensor, check_unit_range, restore_file

        if (mask is None) != (self.condition is None):
            need = "takes no mask" if self.condition is None else "needs a mask (mask=, --mask)"
            raise InputError(f"{self.record.name} {need}")
        mask_t = None if mask is None else _mask_tensor(mask)
        if isinstance(x, torch.Tensor):
            return self(x, mask_t)
        if not isinstance(x, (str, os.PathLike)):
            raise InputError(f"{self.record.name}: run takes a path or a tensor, not {type(x).__name__}")

        def apply(p: Any) -> Any:
            rng = input_range if p.bit_depth == 32 else None
            colour = check_unit_range(p.color, str(x), rng)[None]
            if mask_t is not None and mask_t.shape[-2:] != colour.shape[-2:]:
                raise InputError(
                    f"the mask is {tuple(mask_t.shape[-2:])} but {x} is {tuple(colour.shape[-2:])}; they must match"
                )
            alpha = p.alpha
            if alpha is not None and self.record.scale != 1:
                alpha = imresize(alpha[None], self.record.scale)[0].clamp(0, 1)
            return dataclasses.replace(p, color=self(colour, mask_t)[0].clamp(0, 1), alpha=alpha)

        return restore_file(x, output, apply, overwrite)


def runner(
    model: str,
    task: str | None = None,
    *,
    scale: int | None = None,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    tile: int | str | None = "auto",
    allow_unpinned: bool | None = None,
    progress: bool | None = None,
    lam: float | None = None,
    compile: bool = False,  # noqa: A002 - Restorer's keyword
    download: bool = False,
    batch: int | str = "auto",
) -> Any:
    """What ``restorekit run MODEL`` drives: a catalogue method (:class:`MethodRunner`, or
    :class:`~restorekit.filters.L0Smooth` for ``l0smooth``), a :class:`~restorekit.Restorer` for a registered
    model, or for ``auto`` the Restorer that measures each image and picks the model (:mod:`restorekit.auto`;
    ``task`` narrows its choice). Options that do not apply to a method (weights, dtype, unpinned downloads, a
    scale it cannot use) are refused rather than ignored; an unknown name says which models and methods are close.
    ``download``: ``auto`` only, let it choose models whose weights must still be fetched (``Restorer("auto",
    download=True)``); any other model fetches its own weights anyway."""
    if download and model != "auto":
        raise InputError(
            f"--download is for the auto model (restorekit run auto ... --download); {model} fetches its own weights "
            "on first use, or ahead of time with `restorekit download`"
        )
    if is_method(model):
        method, params = parse_method(model)
        flags = {
            "--weights": weights is not None,
            "--dtype": dtype != "auto",
            "--allow-unpinned": allow_unpinned is not None,
            "--compile": compile is not False,
            "--batch": batch != "auto",
            "--scale": scale is not None and not method.upscales,
            "--task": task is not None and (method.tasks is None or task not in method.tasks),
        }
        given = [flag for flag, on in flags.items() if on]
        if given:
            raise InputError(
                f"{model} is a {method.kind} (no network): {', '.join(given)} "
                f"{'does' if len(given) == 1 else 'do'} not apply"
            )
        if lam is not None and "lam" not in method.params:
            raise InputError(f"--lam is a parameter of the l0smooth filter, not of {method.name}")
        if method.name == "l0smooth":  # the filter object itself: its record and messages, as before
            from .filters import L0Smooth

            return L0Smooth(**{**params, **({} if lam is None else {"lam": lam})}, device=device)
        condition = "mask" if method.needs_mask else None
        return MethodRunner(bind(model, task=task, scale=scale, condition=condition), device=device)
    if lam is not None:
        raise InputError("--lam is a parameter of the l0smooth filter, not of a network")
    from .restorer import Restorer

    extra = {"download": True} if download else {}
    try:
        return Restorer(
            model,
            task,
            scale=scale,
            weights=weights,
            device=device,
            dtype=dtype,
            tile=tile,
            allow_unpinned=allow_unpinned,
            progress=progress,
            compile=compile,
            batch=batch,
            **extra,
        )
    except UnknownModelError as err:
        raise unknown_name(err, model) from None


# ---------------------------------------------------------------------------------------- nearest fill


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
