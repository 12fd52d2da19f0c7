"""The predictor: any input kind in, the same kind out, any size, on any device.

The inference contract lives here and only here: read and normalise the input, match the
model's channels (a grey model runs on the Y of a colour image, or on each RGB channel where its
record says so, a grey denoiser; a colour model on a grey image repeated to RGB), pad to the size
multiple, run whole or in tiles, pick the final output, crop, clamp, and put alpha, bit depth and
layout back as they came.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import image as rkimage
from .allocator import PEAK_GROWTH, retain_freed_memory, retained
from .devices import pick_device
from .errors import PER_IMAGE_ERRORS, InputError, RestorekitError
from .feeding import Feeding
from .options import run_options
from .policy import check_batch, check_compile, compile_model, prepare_input, prepare_model
from .registry import ArchSpec, WeightRecord, get_arch, get_record
from .tiling import TilePlan, auto_tile_size, free_memory, is_oom, run_tiled

__all__ = ["Restorer", "pick_device", "pick_dtype"]

log = logging.getLogger("restorekit")

_BLEND = 16  # pixels of smooth cross-fade between tiles, beyond the receptive-field margin
_UNBOUNDED_MARGIN = 32  # margin for networks with a global receptive field (seams are blended, not exact)
# Mirrored surroundings given to every side of every image (or the receptive field, where smaller). A network
# sees zeros beyond the image (convolution padding, the recurrences' initial state): left alone, that darkens
# or tints a band along every edge (the bundled denoiser: 33 of 255 levels at the corners of a flat image) and
# the whole of an image smaller than the band (a 1x1 pixel came back [128, 130, 119] instead of [200, 100,
# 50]). Measured on the bundled spatial RNN, the edge error is back to the interior's (1 level) from 8 px on,
# and the CBSD68 PSNR gains 0.2 dB; 16 px leaves room for networks whose edge band is wider.
_CONTEXT = 16
# Float inputs may stray this far outside [0, 1] (rounding in the caller's arithmetic) and are clamped; beyond
# it they are refused: 0..255 or -1..1 data read as [0, 1] would be restored into nonsense without a word.
_RANGE_SLACK = 0.5 / 255


def pick_dtype(dtype: str | torch.dtype, device: torch.device, record: WeightRecord) -> torch.dtype:
    """Half precision only on an accelerator, and only where the record lists it as validated
    (:meth:`restorekit.options.RunOptions.dtype_for`)."""
    return run_options(device, dtype).dtype_for(record)


class Restorer:
    """Restore images with a pretrained model.

    >>> r = Restorer("msrn.sr_x2", pretrained=False, device="cpu")
    >>> r.run(np.zeros((8, 8, 3), np.uint8)).shape
    (16, 16, 3)

    ``run`` accepts a path, a PIL image, a numpy array (HW or HWC; uint8, uint16 or float in
    [0, 1]), a torch tensor (CHW or NCHW float in [0, 1]) or a list of them, and returns the same
    kind (a path input returns the written path when ``output=`` is given, else a numpy array).

    ``device``, ``dtype``, ``allow_unpinned`` and ``progress`` mean what they mean for every entry point
    (:mod:`restorekit.options`): ``device="auto"`` picks cuda, then mps, then cpu; ``dtype="auto"`` is float32
    or a half precision the record validates on an accelerator; ``allow_unpinned`` opts in to weights whose
    upstream publishes no checksum (None: ``$RESTOREKIT_ALLOW_UNPINNED``); ``progress`` shows bars for the
    weights' download and for tiles (None: when stderr is a terminal).

    The network runs in its architecture's measured inference policy for the device (memory format,
    :mod:`restorekit.policy`; ``self.policy``), which changes the speed, never the results beyond float rounding.
    ``compile=True`` also runs it through ``torch.compile`` (inductor; the first image of each new size family
    compiles for tens of seconds; docs/performance.md says on which networks it pays); a machine that cannot
    compile is refused with a :class:`~restorekit.errors.RestorekitError`.

    ``batch``: the most images of one size that go through the network in one call, for ``run`` on a list, an
    NCHW tensor, :meth:`restore_planars` and ``restorekit run`` on a folder; fewer when half the free memory
    holds fewer, and a batch that still runs out of memory is split in halves. ``"auto"`` is the architecture's
    measured default for the device (``self.policy.batch``): 1, one image per call, wherever a batch has not
    been measured faster (on the CPU it is slower: docs/performance.md). A batch changes the speed, never the
    results beyond float rounding.
    """

    def __init__(
        self,
        name: str,
        task: str | None = None,
        *,
        scale: int | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        tile: int | str | None = "auto",
        pretrained: bool = True,
        allow_unpinned: bool | None = None,
        progress: bool | None = None,
        compile: bool = False,  # noqa: A002 - the keyword users know from torch.compile
        batch: int | str = "auto",
    ) -> None:
        from .weights import load_model

        self.compile = check_compile(compile)
        batch = check_batch(batch)
        self.options = run_options(device, dtype, allow_unpinned, progress)
        self.record: WeightRecord = get_record(name, task, scale=scale)
        self.spec: ArchSpec = get_arch(self.record.arch)
        self.device = self.options.device
        if self.device.type == "cpu":
            retain_freed_memory()  # large activations reused, not faulted in again (restorekit.allocator)
        self.dtype = self.options.dtype_for(self.record)
        if not (tile in ("auto", None) or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 0)):
            raise InputError(f"tile must be 'auto', None/0 (whole image) or a positive size in pixels, not {tile!r}")
        self.tile = tile
        self.progress = self.options.progress
        # The network stays float32 (a tile whose half result is not finite is redone with it); the half copy
        # is made below.
        self.model = load_model(
            self.record.name,
            weights=weights,
            pretrained=pretrained,
            device=self.device,
            dtype="float32",
            allow_unpinned=self.options.allow_unpinned,
            progress=self.options.progress,
        )
        # What the network is fed (the image; inpainting/colourisation networks a mask too, see run(mask=)) and the
        # multiple its sides must divide by, as its architecture declares them for the record's config.
        self.feeding = Feeding.of(self.spec, self.record.config)
        # Mirrored pixels around every image (see _CONTEXT). Not for masked models: mirroring the mask would
        # invent known pixels and colour hints beyond the image, and measured on CBSD68 it costs the bundled
        # colouriser 0.5 dB (0.2 dB with an empty mask there) and moves inpainting by under 0.03 dB.
        radius = self.spec.receptive_field_for(self.record.config)
        self.context = 0 if self.feeding.condition else _CONTEXT if radius is None else min(_CONTEXT, radius)
        # The measured policy of the architecture on this device (restorekit/policy.py): the weights' memory format
        # here, the input's in _run_tile. The half copy inherits it.
        self.policy = self.spec.policy.for_device(self.device)
        # The most same-size images one network call takes (fewer when half the free memory holds fewer).
        self.batch: int = self.policy.batch if batch == "auto" else int(batch)
        prepare_model(self.model, self.policy)
        self._half: torch.nn.Module | None = None
        if self.dtype != torch.float32:
            self._half = copy.deepcopy(self.model).to(self.dtype)
        # What _run_tile calls: the modules themselves, or their torch.compile'd forms (compiled lazily, per shape).
        self._compiled: Callable[..., Any] | None = None
        self._half_compiled: Callable[..., Any] | None = None
        if self.compile:
            self._compiled = compile_model(self.model, self.device, self.record.name)
            if self._half is not None:
                self._half_compiled = compile_model(self._half, self.device, self.record.name)
        margin = radius if radius is not None else _UNBOUNDED_MARGIN
        m = self.feeding.size_multiple
        self.margin = -(-margin // m) * m
        self.overlap = 2 * self.margin + -(-_BLEND // m) * m
        self.min_tile = 2 * self.overlap + m  # smaller tiles would be mostly overlap
        self.last_tile: int | None = None  # tile size used by the last run (None: whole image)

    @property
    def condition(self) -> str | None:
        """What the model takes besides the image: ``"mask"`` (inpainting), ``"hints"`` (colourisation) or None."""
        return self.feeding.condition

    @property
    def mask_channels(self) -> int:
        """1 for a model that takes ``mask=`` (one more input channel), else 0."""
        return self.feeding.mask_channels

    def __new__(cls, *args: Any, **kwargs: Any) -> Restorer:
        # Restorer("auto", ...) measures each image and picks the model (restorekit.auto).
        auto = cls is Restorer and (args[0] if args else kwargs.get("name")) == "auto"
        return super().__new__(_auto_restorer() if auto else cls)

    def __repr__(self) -> str:
        return (
            f"Restorer({self.record.name!r}, device={str(self.device)!r}, dtype={str(self.dtype)[6:]!r}, "
            f"tile={self.tile!r}" + (f", batch={self.batch}" if self.batch > 1 else "") + ")"
        )

    # ------------------------------------------------------------------ public API
    def run(
        self,
        x: Any,
        output: str | os.PathLike | None = None,
        *,
        overwrite: bool = True,
        mask: Any = None,
        input_range: tuple[float, float] | None = None,
    ) -> Any:
        """Restore ``x`` (see the class docstring); ``output=`` also writes the result.

        For a list, ``output`` is a directory and each result is written under its input's
        name (``0000.png``, ``0001.png``, ... for in-memory inputs); two inputs with the same name, or an
        output that would replace an input, are refused before any work.

        ``mask`` (inpainting and colourisation models only, e.g. ``spatial_rnn.inpaint``): an image
        of the same size as ``x`` (path, PIL, numpy HW/HWC, tensor HW/1HW/N1HW), 1 where the pixel
        (or, for colourisation, its colour) is known and 0 where it is to be filled; for a list of
        inputs, one mask for all or a list of masks. What the input knows is kept (:func:`keep_known`):
        inpainting returns the known pixels unchanged, colourisation keeps the input's luma everywhere
        and its colour at the hints.

        ``input_range=(lo, hi)``: the range of float inputs (arrays, tensors, float TIFFs) when it is not
        [0, 1], e.g. ``(0, 255)`` or ``(-1, 1)``; float results come back in the same range. Without it, float
        values outside [0, 1] (beyond rounding) are refused rather than clamped.
        """
        if mask is not None and self.condition is None:
            raise InputError(
                f"{self.record.name} takes no mask; mask= is for inpainting/colourisation models "
                "(spatial_rnn.inpaint, spatial_rnn.colorize). Drop mask= for this model."
            )
        if mask is None and self.condition is not None:
            raise InputError(
                f"{self.record.name} needs mask=: an image the size of the input, 1 where the pixel (colorize: its "
                "colour) is known, 0 where it is to be filled; e.g. run(image, mask=mask_array)."
            )
        value_range = _check_input_range(input_range)
        if isinstance(x, (list, tuple)):
            out_dir = Path(output) if output is not None else None
            masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(x)
            if len(masks) != len(x):
                raise InputError(f"got {len(x)} inputs but {len(masks)} masks; pass one mask, or one per input")
            targets: list[Path | None] = [None] * len(x)
            if out_dir is not None:
                if out_dir.is_file():
                    raise InputError(f"output={out_dir} is a file; for a list of inputs pass a folder")
                paths = [Path(item) if isinstance(item, (str, os.PathLike)) else None for item in x]
                targets = [out_dir / (p.name if p else f"{i:04d}.png") for i, p in enumerate(paths)]
                labels = [str(p) if p else f"input {i}" for i, p in enumerate(paths)]
                inputs = [p for p in paths if p is not None]
                clashes = rkimage.output_clashes(list(zip(labels, targets)), inputs)
                if clashes:
                    listed = "; ".join(f"{labels[i]}: {why}" for i, why in list(clashes.items())[:5])
                    more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
                    raise InputError(
                        f"refusing to start: {listed}{more}. Rename the inputs, or restore them into separate folders."
                    )
            if self.batch > 1 and all(m is None for m in masks):
                return self._run_many(list(x), targets, overwrite, value_range)
            return [
                self.run(item, target, overwrite=overwrite, mask=item_mask, input_range=input_range)
                for item, target, item_mask in zip(x, targets, masks)
            ]
        mask_t = _mask_tensor(mask) if mask is not None else None
        if isinstance(x, torch.Tensor):
            result_t = self._run_tensor(x, mask_t, value_range)
            if output is not None:
                lo, hi = value_range or (0.0, 1.0)
                self._write_tensor((result_t.float() - lo) / (hi - lo), output, overwrite)
            return result_t
        planar, finish = self._job(x, output, overwrite, value_range)
        return finish(self.restore_planar(planar, mask=mask_t, input_range=value_range))

    __call__ = run

    def restore_planar(
        self,
        planar: rkimage.Planar,
        mask: torch.Tensor | None = None,
        input_range: tuple[float, float] | None = None,
    ) -> rkimage.Planar:
        """Restore one decoded image; the result keeps its alpha, bit depth and layout.

        Float images (``bit_depth`` 32) must hold values in [0, 1], or in ``input_range``."""
        self._check_planar(planar, input_range)
        color = planar.color
        restored = self._restore_channels(_unit_range(color, input_range).unsqueeze(0), mask)[0]
        return self._with_alpha(planar, restored, input_range)

    def restore_planars(
        self,
        planars: Sequence[rkimage.Planar],
        input_range: tuple[float, float] | None = None,
        *,
        errors: str = "raise",
    ) -> list[Any]:
        """Restore several decoded images, those of one shape together, up to :attr:`batch` per network call
        (fewer where half the free memory holds fewer); with ``batch`` 1, one :meth:`restore_planar` each.

        Each result equals :meth:`restore_planar`'s to float rounding (a batched convolution may sum in another
        order). ``errors="raise"`` raises the first image's error; ``"return"`` puts each failed image's
        exception in its place in the list and restores the others."""
        if errors not in ("raise", "return"):
            raise InputError(f"errors must be 'raise' or 'return', not {errors!r}")
        results: list[Any] = [None] * len(planars)
        units: dict[int, torch.Tensor] = {}
        for i, planar in enumerate(planars):
            try:
                if self.batch == 1:
                    results[i] = self.restore_planar(planar, input_range=input_range)
                    continue
                self._check_planar(planar, input_range)
                units[i] = _unit_range(planar.color, input_range)
            except PER_IMAGE_ERRORS as err:
                if errors == "raise":
                    raise
                results[i] = err
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, unit in units.items():
            groups.setdefault(tuple(unit.shape), []).append(i)
        for members in groups.values():
            for k in range(0, len(members), self.batch):
                chunk = members[k : k + self.batch]
                try:
                    restored = self._restore_channels(torch.stack([units.pop(i) for i in chunk]))
                    for i, color in zip(chunk, restored):
                        results[i] = self._with_alpha(planars[i], color, input_range)
                except PER_IMAGE_ERRORS as err:
                    if errors == "raise":
                        raise
                    for i in chunk:
                        if results[i] is None:
                            results[i] = err
        return results

    def _check_planar(self, planar: rkimage.Planar, input_range: tuple[float, float] | None) -> None:
        color = planar.color
        if color.ndim != 3 or color.shape[0] not in (1, 3) or color.shape[1] < 1 or color.shape[2] < 1:
            raise InputError(f"expected a (1 or 3, H, W) image, got shape {tuple(color.shape)}")
        if planar.bit_depth != 32 and input_range is not None:
            raise InputError(
                f"input_range= applies to float images, but this one is {planar.bit_depth}-bit, which is read as "
                f"0-{2**planar.bit_depth - 1} already; drop input_range"
            )

    def _with_alpha(
        self, planar: rkimage.Planar, restored: torch.Tensor, input_range: tuple[float, float] | None
    ) -> rkimage.Planar:
        """The restored colour of ``planar`` with its alpha (resized for SR), bit depth and layout."""
        alpha = planar.alpha
        if alpha is not None:
            alpha = _unit_range(alpha, input_range, what="its alpha channel")
            if self.record.scale != 1:
                alpha = _resize(alpha.unsqueeze(0), self.record.scale)[0].clamp(0, 1)
        return rkimage.Planar(color=restored, alpha=alpha, bit_depth=planar.bit_depth, layout=planar.layout)

    def _job(
        self, x: Any, output: str | os.PathLike | None, overwrite: bool, value_range: tuple[float, float] | None
    ) -> tuple[rkimage.Planar, Callable[[rkimage.Planar], Any]]:
        """A path, PIL image or numpy array -> its decoded image and what turns the restored one into
        :meth:`run`'s result (writing ``output`` when given)."""
        if isinstance(x, (str, os.PathLike)):
            src = Path(x)
            return rkimage.read_image(src), lambda result: finish_file(src, output, result, overwrite)
        for kind, to_planar, from_planar in _ADAPTERS:
            if isinstance(x, kind):
                finish = functools.partial(
                    rkimage.finish_in_memory,
                    from_planar=from_planar,
                    output=output,
                    overwrite=overwrite,
                    value_range=value_range,
                )
                return to_planar(x), finish
        raise InputError(
            f"Cannot restore an object of type {type(x).__name__}: pass a path, a PIL image, a numpy "
            "array (HW/HWC), a torch tensor (CHW/NCHW float in [0, 1]) or a list of them."
        )

    def _run_many(
        self,
        items: list[Any],
        targets: list[Path | None],
        overwrite: bool,
        value_range: tuple[float, float] | None,
    ) -> list[Any]:
        """``run`` on a list with batching: decode a window of inputs, restore those of one size together
        (:meth:`restore_planars`), finish them in input order. Tensors run alone, as ``run(tensor)`` does. As one
        at a time, the first error is raised after every earlier input is finished (written)."""
        done: list[Any] = []
        window = 4 * self.batch
        start = 0
        while start < len(items):
            if isinstance(items[start], torch.Tensor):
                done.append(self.run(items[start], targets[start], overwrite=overwrite, input_range=value_range))
                start += 1
                continue
            jobs: list[tuple[rkimage.Planar, Callable[[rkimage.Planar], Any]]] = []
            failure: BaseException | None = None
            while start < len(items) and len(jobs) < window and not isinstance(items[start], torch.Tensor):
                try:
                    jobs.append(self._job(items[start], targets[start], overwrite, value_range))
                except Exception as err:  # noqa: BLE001 - raised below, after the inputs before it are finished
                    failure = err
                    break
                start += 1
            results = self.restore_planars([planar for planar, _ in jobs], value_range, errors="return")
            for (_, finish), result in zip(jobs, results):
                if isinstance(result, BaseException):
                    raise result
                done.append(finish(result))
            if failure is not None:
                raise failure
        return done

    # ------------------------------------------------------------------ internals
    def _restore_channels(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) in [0, 1], C = 1 or 3 -> restored, same C; matches the model's channels."""
        cin, cout = self.record.in_channels, self.record.out_channels
        c = x.shape[1]
        if c == cin:
            y = self._forward(x, mask)
            if y.shape[1] == c:
                return y
            if y.shape[1] == 3 and c == 1:
                return rkimage.rgb_to_grey(y)
            return y
        if cin == 1 and c == 3 and self.record.grey_on_color == "rgb":
            # A grey denoiser on a colour image: each RGB channel on its own (noise is in all three; see
            # WeightRecord.grey_on_color), so the chroma noise goes too.
            n, _, h, w = x.shape
            y = self._forward(x.reshape(n * 3, 1, h, w), mask)
            return y.reshape(n, 3, *y.shape[-2:])
        if cin == 1 and c == 3:
            # A grey model restores the luma; chroma is carried over (upsampled for SR).
            ycc = rkimage.rgb_to_ycbcr(x)
            y = self._forward(ycc[:, :1], mask)
            chroma = ycc[:, 1:]
            if self.record.scale != 1:
                chroma = _resize(chroma, self.record.scale)
            return rkimage.ycbcr_to_rgb(torch.cat([y, chroma], 1)).clamp(0, 1)
        if cin == 3 and c == 1:
            y = self._forward(x.expand(-1, 3, -1, -1), mask)
            return rkimage.rgb_to_grey(y).clamp(0, 1) if cout == 3 else y
        raise InputError(f"{self.record.name} takes {cin}-channel images; cannot adapt a {c}-channel input")

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mirror ``context`` pixels around the image and pad to the size multiple, run whole or tiled, crop,
        clamp. x: (N, C, H, W) float32 on the CPU."""
        given, known = x, mask
        if self.record.pre_upsample:
            # A scale-1 network trained on bicubic-upsampled inputs (MemNet SR): upsample first, then restore.
            x = _resize(x, self.record.scale).clamp_(0, 1)
        n, _, h, w = x.shape
        s = self.record.net_scale
        m = self.feeding.size_multiple
        c = self.context
        # The image sits c pixels in from the top and left; bottom and right get c plus what the multiple needs.
        pads = (c, c + (-(h + 2 * c)) % m, c, c + (-(w + 2 * c)) % m)
        if mask is not None:  # the mask rides along as one more channel (padded, tiled and cropped with the image)
            if mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, n):
                raise InputError(f"the mask is {tuple(mask.shape[-2:])} but the image is {(h, w)}; give them one size")
            mask = mirror_pad(mask, *pads)
        x = self.feeding.to_network(mirror_pad(x, *pads), mask)
        tile = self._choose_tile(x.shape[-2], x.shape[-1])
        step = 1 if tile is not None else self._batch_for(x.shape[-2], x.shape[-1])
        outs = [self._run_with_retry(x[i : i + step], tile) for i in range(0, n, step)]
        y = self.feeding.from_network(torch.cat(outs, 0))
        y = y[:, :, c * s : (c + h) * s, c * s : (c + w) * s].clamp_(0, 1)
        return y if known is None else keep_known(self.record.task, given, y, known)

    def _footprint(self) -> float:
        """Bytes per input pixel of one forward pass at the run's dtype: the architecture's measured fp32
        footprint, times the peak growth of the retained heap on the CPU (:data:`restorekit.allocator.PEAK_GROWTH`)."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        growth = PEAK_GROWTH if self.device.type == "cpu" and retained() else 1.0
        return self.spec.footprint_for(self.record.config) * itemsize / 4 * growth

    def _choose_tile(self, h: int, w: int) -> int | None:
        m = self.feeding.size_multiple
        if self.tile in (None, 0):
            return None
        if self.tile == "auto":
            footprint = self._footprint()
            budget = free_memory(self.device)
            if footprint * h * w <= 0.5 * budget:
                return None
            return auto_tile_size(footprint, budget, dtype_bytes=4, multiple=m, min_tile=self.min_tile)
        assert isinstance(self.tile, int)
        tile = max(self.min_tile, -(-self.tile // m) * m)
        return None if tile >= max(h, w) else tile

    def _batch_for(self, h: int, w: int) -> int:
        """How many (h, w) network inputs one call takes: at most :attr:`batch`, and no more than half the free
        memory holds by the architecture's footprint (the bound :meth:`_choose_tile` puts on one image)."""
        if self.batch == 1:
            return 1
        per_image = self._footprint() * h * w
        return max(1, min(self.batch, int(0.5 * free_memory(self.device) // max(per_image, 1.0))))

    def _run_with_retry(self, x: torch.Tensor, tile: int | None) -> torch.Tensor:
        m = self.feeding.size_multiple
        while True:
            try:
                if tile is None or tile >= max(x.shape[-2:]):
                    self.last_tile = None
                    return self._run_tile(x.to(self.device, non_blocking=True)).float().cpu()
                self.last_tile = tile
                return self._run_tiled(x, tile)
            except Exception as err:  # noqa: BLE001 - only out-of-memory is retried, everything else re-raised
                if not is_oom(err):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if x.shape[0] > 1:
                    # A batch that does not fit is split before any image is tiled.
                    half = x.shape[0] // 2
                    warnings.warn(
                        f"out of memory on {self.device} with a batch of {x.shape[0]}; retrying in halves",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    return torch.cat([self._run_with_retry(x[:half], tile), self._run_with_retry(x[half:], tile)])
                size = max(x.shape[-2:]) if tile is None else tile
                smaller = max(self.min_tile, (size // 2) // m * m)
                if smaller >= size:
                    raise RestorekitError(
                        f"out of memory on {self.device} even with {size}px tiles; free memory, pass a smaller "
                        "tile=, or use device='cpu'"
                    ) from err
                warnings.warn(
                    f"out of memory on {self.device} at {size}px; retrying with {smaller}px tiles",
                    RuntimeWarning,
                    stacklevel=2,
                )
                tile = smaller

    def _run_tiled(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        plan = TilePlan(tile=tile, overlap=self.overlap, margin=self.margin)
        from tqdm.auto import tqdm

        bar = tqdm(desc=self.record.name, unit="tile", leave=False, disable=self.options.bar_disabled)

        def tick(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)

        try:
            return run_tiled(
                self._run_tile,
                x,
                plan,
                scale=self.record.net_scale,
                device=self.device,
                multiple=self.feeding.size_multiple,
                progress=tick,
            )
        finally:
            bar.close()

    def _run_tile(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on the device, the input laid out as the policy says; a non-finite half-precision
        result is redone in fp32."""
        x = prepare_input(x, self.policy)
        with torch.inference_mode():
            if self._half is not None:
                y = self._select((self._half_compiled or self._half)(x.to(self.dtype)))
                if bool(torch.isfinite(y).all()):
                    return y.float()
                log.warning(
                    "%s: non-finite %s output on a tile; recomputing it in float32", self.record.name, self.dtype
                )
            return self._select((self._compiled or self.model)(x.float()))

    def _select(self, out: Any) -> torch.Tensor:
        if self.spec.select_output is not None:
            return self.spec.select_output(out)
        return out

    def _run_tensor(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, value_range: tuple[float, float] | None = None
    ) -> torch.Tensor:
        _check_tensor(x)
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        y = self._restore_channels(_unit_range(batch.detach().to("cpu", torch.float32), value_range), mask)
        if value_range is not None:
            lo, hi = value_range
            y = y * (hi - lo) + lo
        y = y.to(device=x.device, dtype=x.dtype)
        return y if x.ndim == 4 else y[0]

    def _write_tensor(self, y: torch.Tensor, output: str | os.PathLike, overwrite: bool) -> None:
        if y.ndim == 4 and y.shape[0] != 1:
            raise InputError("output= with a batch of several images: pass a list of tensors with an output directory")
        img = y[0] if y.ndim == 4 else y
        rkimage.write_image(
            output, rkimage.Planar(color=img.detach().float().cpu(), alpha=None, bit_depth=32), overwrite=overwrite
        )


_ADAPTERS = (
    (np.ndarray, rkimage.numpy_to_planar, rkimage.planar_to_numpy),
    (Image.Image, rkimage.pil_to_planar, rkimage.planar_to_pil),
)


def restore_file(
    src: str | os.PathLike,
    output: str | os.PathLike | None,
    transform: Callable[[rkimage.Planar], rkimage.Planar],
    overwrite: bool = True,
) -> Any:
    """Decode ``src``, apply ``transform``, and write the result to ``output`` (never over ``src``) returning the
    path written, or return it as a numpy array when ``output`` is None. Shared by every file-level runner."""
    src = Path(src)
    return finish_file(src, output, transform(rkimage.read_image(src)), overwrite)


def finish_file(src: Path, output: str | os.PathLike | None, result: rkimage.Planar, overwrite: bool = True) -> Any:
    """What :func:`restore_file` does with the restored image of ``src``: write it to ``output`` (never over
    ``src``) and return the path, or return it as a numpy array when ``output`` is None."""
    if output is None:
        return rkimage.planar_to_numpy(result)
    if Path(output).resolve() == src.resolve():
        raise InputError(f"Refusing to overwrite the input {src} with its own result; choose another output.")
    return rkimage.write_image(output, result, overwrite=overwrite)


def keep_known(task: str, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the input already knows, put back into a masked model's output ``y`` (N, 3, H, W).

    Inpainting: every known pixel (mask 1) is the input's. Colourisation: the luma of every pixel is the
    input's (the grey image is given; the network only has to find the colour), so the BT.601 Y of ``y``
    is replaced by the input's and Cb/Cr are kept, and the hint pixels (mask 1) are the input's colour.
    Partial mask values blend linearly.
    """
    if task == "colorize" and x.shape[1] == 3:
        ycc = rkimage.rgb_to_ycbcr(y)
        ycc = torch.cat([rkimage.rgb_to_ycbcr(x)[:, :1], ycc[:, 1:]], 1)
        y = rkimage.ycbcr_to_rgb(ycc).clamp_(0, 1)
    if task in ("inpaint", "colorize"):
        y = y * (1 - mask) + x * mask
    return y


def _check_input_range(value_range: Any) -> tuple[float, float] | None:
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        msg = f"input_range must be a pair (lo, hi) such as (0, 255) or (-1, 1), not {value_range!r}"
        raise InputError(msg) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"input_range must be finite with lo < hi, such as (0, 255) or (-1, 1); got {value_range!r}")
    return lo, hi


def _check_tensor(x: torch.Tensor) -> None:
    """Refuse, with what to do, every tensor the restorer cannot read as an image."""
    if x.device.type == "meta":
        raise InputError(
            f"the input tensor is on the meta device: it has a shape {tuple(x.shape)} but no pixels; create it on "
            "the cpu (or a GPU) with real data"
        )
    if x.layout != torch.strided:
        raise InputError(f"tensor inputs must be dense, not {x.layout}; call .to_dense() first")
    if x.is_complex() or not torch.is_floating_point(x):
        raise InputError(f"tensor inputs must be float in [0, 1], got {x.dtype}; divide by 255 (or 65535) first")
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise InputError(
            f"tensor inputs must be CHW or NCHW with 1 or 3 channels, got shape {tuple(x.shape)}; a HWC tensor needs "
            ".permute(2, 0, 1)"
        )
    if x.numel() == 0:
        raise InputError(f"the input tensor of shape {tuple(x.shape)} is empty; an image needs at least 1x1 pixel")


def check_unit_range(
    x: torch.Tensor, what: str = "the input", value_range: tuple[float, float] | None = None
) -> torch.Tensor:
    """``x`` (mapped from ``value_range`` when given) clamped to [0, 1], after refusing NaN/inf and values outside
    [0, 1] beyond rounding with an InputError that says what to pass."""
    return _unit_range(x, _check_input_range(value_range), what)


def _unit_range(
    x: torch.Tensor, value_range: tuple[float, float] | None = None, what: str = "the input"
) -> torch.Tensor:
    """Pixels in [0, 1]: NaN/inf and values outside [0, 1] beyond rounding are refused with a count (a silent
    clamp would hide a broken pipeline); ``value_range`` maps another range onto [0, 1] first."""
    if value_range is not None:
        lo, hi = value_range
        x = (x - lo) / (hi - lo)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise InputError(f"{what} has {bad} NaN or infinite values; restorekit needs finite pixels in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        if value_range is not None:
            lo, hi = value_range
            found = f"{low * (hi - lo) + lo:g}..{high * (hi - lo) + lo:g}"
            raise InputError(f"{what} holds values {found}, outside the input_range {lo:g}..{hi:g} that was given")
        if low >= -_RANGE_SLACK and high <= 255 + _RANGE_SLACK:
            guess = " It looks like 0..255 data: pass input_range=(0, 255) (CLI: --input-range 0:255) or divide by 255."
        elif low >= -1 - _RANGE_SLACK and high <= 1 + _RANGE_SLACK:
            guess = " It looks like -1..1 data: pass input_range=(-1, 1) (CLI: --input-range -1:1), or use (x + 1) / 2."
        else:
            guess = " Pass input_range=(lo, hi) (CLI: --input-range LO:HI) with its range, or rescale it to [0, 1]."
        raise InputError(
            f"{what} holds float values {low:g}..{high:g}, but float pixels must lie in [0, 1] (integer images: "
            f"uint8 0..255, uint16 0..65535).{guess}"
        )
    return x.clamp(0, 1)


def _mask_tensor(mask: Any) -> torch.Tensor:
    """A mask in any image form -> (N, 1, H, W) float32 in [0, 1] (the channel mean of a colour mask)."""
    if isinstance(mask, torch.Tensor):
        m = mask.detach().to("cpu", torch.float32)
        if m.ndim == 2:
            m = m[None, None]
        elif m.ndim == 3:
            m = m[None]
        if m.ndim != 4 or m.shape[1] != 1:
            raise InputError(f"a tensor mask must be HW, 1HW or N1HW, got shape {tuple(mask.shape)}")
        return _unit_range(m, what="the mask")
    if isinstance(mask, (str, os.PathLike)):
        planar = rkimage.read_image(mask)
    else:
        to_planar = next((adapt for kind, adapt, _ in _ADAPTERS if isinstance(mask, kind)), None)
        if to_planar is None:
            raise InputError(
                f"cannot use a {type(mask).__name__} as a mask: pass a path, PIL image, numpy array or tensor"
            )
        planar = to_planar(mask)
    return _unit_range(planar.color.mean(0, keepdim=True)[None], what="the mask")


def _mirror_index(n: int, before: int, after: int) -> torch.Tensor:
    """Indices of ``range(-before, n + after)`` folded into ``[0, n)`` by reflection about the edge pixels
    (torch's ``"reflect"``: ``2 1 | 0 1 2 3 | 2 1``), repeated as often as the padding needs; a 1-pixel side
    repeats its pixel."""
    i = torch.arange(-before, n + after)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad (..., H, W) by reflection, any amount on any side: a 1x1 image becomes a flat one, a 2x2 a checker
    of itself; equal to ``F.pad(x, (left, right, top, bottom), mode="reflect")`` where that is defined."""
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w:
        return F.pad(x, (left, right, top, bottom), mode="reflect") if top or bottom or left or right else x
    return x.index_select(-2, _mirror_index(h, top, bottom)).index_select(-1, _mirror_index(w, left, right))


def _resize(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling for carried-over chroma and alpha and pre-upsampled SR: MATLAB's ``imresize``."""
    from .resize import imresize

    return imresize(x, scale)


_AUTO: list[type] = []


def _auto_restorer() -> type:
    """``Restorer("auto")``'s class, built on first use (so that importing restorer does not import analysis)."""
    if not _AUTO:
        from .auto import AutoRun

        class AutoRestorer(AutoRun, Restorer):
            """``Restorer("auto")``: :class:`restorekit.auto.AutoRun` with this module's input checks and models."""

            def _model(self, name: str, **options: Any) -> Restorer:
                return Restorer(name, **options)

            def _unit(self, x: torch.Tensor, value_range: Any, what: str) -> torch.Tensor:
                return _unit_range(x, _check_input_range(value_range), what)

            def _check_tensor(self, x: torch.Tensor) -> None:
                _check_tensor(x)

        _AUTO.append(AutoRestorer)
    return _AUTO[0]
