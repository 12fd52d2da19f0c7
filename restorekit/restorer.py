"""The predictor: any input kind in, the same kind out, any size, on any device.

The inference contract lives here and only here: read and normalise the input, match the
model's channels (a grey model runs on the Y of a colour image, or on each RGB channel where its
record says so, a grey denoiser; a colour model on a grey image repeated to RGB), pad to the size
multiple, run whole or in tiles, pick the final output, crop, clamp, and put alpha, bit depth and
layout back as they came.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import image as rkimage
from .errors import InputError, RestorekitError
from .registry import ArchSpec, WeightRecord, get_arch, get_record
from .tiling import TilePlan, auto_tile_size, free_memory, is_oom, run_tiled

__all__ = ["Restorer", "pick_device", "pick_dtype"]

log = logging.getLogger("restorekit")

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "half": torch.float16,
}
_BLEND = 16  # pixels of smooth cross-fade between tiles, beyond the receptive-field margin
_UNBOUNDED_MARGIN = 32  # margin for networks with a global receptive field (seams are blended, not exact)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise InputError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'.") from err


def pick_dtype(dtype: str | torch.dtype, device: torch.device, record: WeightRecord) -> torch.dtype:
    """Half precision only on an accelerator, and only where the record lists it as validated."""
    if dtype == "auto":
        if device.type in ("cuda", "mps"):
            if "float16" in record.dtypes:
                return torch.float16
            if "bfloat16" in record.dtypes and device.type == "cuda" and torch.cuda.is_bf16_supported():
                return torch.bfloat16
        return torch.float32
    want = dtype if isinstance(dtype, torch.dtype) else _DTYPES.get(str(dtype))
    if want is None:
        raise InputError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'float16' or 'bfloat16'.")
    name = str(want).removeprefix("torch.")
    if name not in record.dtypes:
        raise InputError(
            f"{record.name} is validated only for {', '.join(record.dtypes)}, not {name}; "
            "use dtype='auto' or 'float32'."
        )
    return want


class Restorer:
    """Restore images with a pretrained model.

    >>> r = Restorer("msrn.sr_x2", pretrained=False, device="cpu")
    >>> r.run(np.zeros((8, 8, 3), np.uint8)).shape
    (16, 16, 3)

    ``run`` accepts a path, a PIL image, a numpy array (HW or HWC; uint8, uint16 or float in
    [0, 1]), a torch tensor (CHW or NCHW float in [0, 1]) or a list of them, and returns the same
    kind (a path input returns the written path when ``output=`` is given, else a numpy array).
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
        progress: bool = False,
    ) -> None:
        from .weights import load_model

        self.record: WeightRecord = get_record(name, task, scale=scale)
        self.spec: ArchSpec = get_arch(self.record.arch)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device, self.record)
        if not (tile in ("auto", None) or (isinstance(tile, int) and tile >= 0)):
            raise InputError(f"tile must be 'auto', None/0 (whole image) or a positive size, not {tile!r}")
        self.tile = tile
        self.progress = progress
        self.model = load_model(self.record.name, weights=weights, pretrained=pretrained, device=self.device)
        # Inpainting/colourisation networks take a mask as one extra input channel (see run(mask=)).
        self.mask_channels = int(getattr(self.model, "mask_channels", 0))
        self._half: torch.nn.Module | None = None
        if self.dtype != torch.float32:
            self._half = copy.deepcopy(self.model).to(self.dtype)
        radius = self.spec.receptive_field_for(self.record.config)
        margin = radius if radius is not None else _UNBOUNDED_MARGIN
        m = self.record.size_multiple
        self.margin = -(-margin // m) * m
        self.overlap = 2 * self.margin + -(-_BLEND // m) * m
        self.min_tile = 2 * self.overlap + m  # smaller tiles would be mostly overlap
        self.last_tile: int | None = None  # tile size used by the last run (None: whole image)

    def __repr__(self) -> str:
        return (
            f"Restorer({self.record.name!r}, device={str(self.device)!r}, dtype={str(self.dtype)[6:]!r}, "
            f"tile={self.tile!r})"
        )

    # ------------------------------------------------------------------ public API
    def run(self, x: Any, output: str | os.PathLike | None = None, *, overwrite: bool = True, mask: Any = None) -> Any:
        """Restore ``x`` (see the class docstring); ``output=`` also writes the result.

        For a list, ``output`` is a directory and each result is written under its input's
        name (``0000.png``, ``0001.png``, ... for in-memory inputs).

        ``mask`` (inpainting and colourisation models only, e.g. ``spatial_rnn.inpaint``): an image
        of the same size as ``x`` (path, PIL, numpy HW/HWC, tensor HW/1HW/N1HW), 1 where the pixel
        (or, for colourisation, its colour) is known and 0 where it is to be filled; for a list of
        inputs, one mask for all or a list of masks. What the input knows is kept (:func:`keep_known`):
        inpainting returns the known pixels unchanged, colourisation keeps the input's luma everywhere
        and its colour at the hints.
        """
        if mask is not None and not self.mask_channels:
            raise InputError(
                f"{self.record.name} takes no mask; mask= is for inpainting/colourisation models "
                "(spatial_rnn.inpaint, spatial_rnn.colorize). Drop mask= for this model."
            )
        if mask is None and self.mask_channels:
            raise InputError(
                f"{self.record.name} needs mask=: an image the size of the input, 1 where the pixel (colorize: its "
                "colour) is known, 0 where it is to be filled; e.g. run(image, mask=mask_array)."
            )
        if isinstance(x, (list, tuple)):
            out_dir = Path(output) if output is not None else None
            masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(x)
            if len(masks) != len(x):
                raise InputError(f"got {len(x)} inputs but {len(masks)} masks; pass one mask, or one per input")
            results = []
            for i, (item, item_mask) in enumerate(zip(x, masks)):
                target = None
                if out_dir is not None:
                    stem = Path(item).name if isinstance(item, (str, os.PathLike)) else f"{i:04d}.png"
                    target = out_dir / stem
                results.append(self.run(item, target, overwrite=overwrite, mask=item_mask))
            return results
        mask_t = _mask_tensor(mask) if mask is not None else None
        if isinstance(x, (str, os.PathLike)):
            return restore_file(x, output, lambda planar: self.restore_planar(planar, mask=mask_t), overwrite)
        if isinstance(x, torch.Tensor):
            result_t = self._run_tensor(x, mask_t)
            if output is not None:
                self._write_tensor(result_t, output, overwrite)
            return result_t
        for kind, to_planar, from_planar in _ADAPTERS:
            if isinstance(x, kind):
                result = self.restore_planar(to_planar(x), mask=mask_t)
                if output is not None:
                    rkimage.write_image(output, result, overwrite=overwrite)
                return from_planar(result)
        raise InputError(
            f"Cannot restore an object of type {type(x).__name__}: pass a path, a PIL image, a numpy "
            "array (HW/HWC), a torch tensor (CHW/NCHW float in [0, 1]) or a list of them."
        )

    __call__ = run

    def restore_planar(self, planar: rkimage.Planar, mask: torch.Tensor | None = None) -> rkimage.Planar:
        """Restore one decoded image; the result keeps its alpha, bit depth and layout."""
        color = planar.color
        if color.ndim != 3 or color.shape[0] not in (1, 3) or color.shape[1] < 1 or color.shape[2] < 1:
            raise InputError(f"expected a (1 or 3, H, W) image, got shape {tuple(color.shape)}")
        restored = self._restore_channels(_finite_unit(color).unsqueeze(0), mask)[0]
        alpha = planar.alpha
        if alpha is not None and self.record.scale != 1:
            alpha = _resize(alpha.unsqueeze(0), self.record.scale)[0].clamp(0, 1)
        return rkimage.Planar(color=restored, alpha=alpha, bit_depth=planar.bit_depth, layout=planar.layout)

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
        """Pad to the size multiple, run whole or tiled, crop, clamp. x: (N, C, H, W) float32 on the CPU."""
        given, known = x, mask
        if self.record.pre_upsample:
            # A scale-1 network trained on bicubic-upsampled inputs (MemNet SR): upsample first, then restore.
            x = _resize(x, self.record.scale).clamp_(0, 1)
        n, _, h, w = x.shape
        s = self.record.net_scale
        m = self.record.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = _pad(x, ph, pw)
        x = x * self.spec.value_range if self.spec.value_range != 1 else x
        if mask is not None:  # the mask rides along as one more channel (padded, tiled and cropped with the image)
            if mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, n):
                raise InputError(f"the mask is {tuple(mask.shape[-2:])} but the image is {(h, w)}; give them one size")
            mask = mask.expand(n, -1, -1, -1)
            x = torch.cat([x, _pad(mask, ph, pw) if ph or pw else mask], 1)
        tile = self._choose_tile(x.shape[-2], x.shape[-1])
        outs = []
        for i in range(n):
            outs.append(self._run_with_retry(x[i : i + 1], tile))
        y = torch.cat(outs, 0)
        if self.spec.value_range != 1:
            y = y / self.spec.value_range
        y = y[:, :, : h * s, : w * s].clamp_(0, 1)
        return y if known is None else keep_known(self.record.task, given, y, known)

    def _choose_tile(self, h: int, w: int) -> int | None:
        m = self.record.size_multiple
        if self.tile in (None, 0):
            return None
        if self.tile == "auto":
            footprint = self.spec.footprint_for(self.record.config)
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            budget = free_memory(self.device)
            if footprint * h * w * itemsize / 4 <= 0.5 * budget:
                return None
            return auto_tile_size(footprint, budget, dtype_bytes=itemsize, multiple=m, min_tile=self.min_tile)
        assert isinstance(self.tile, int)
        tile = max(self.min_tile, -(-self.tile // m) * m)
        return None if tile >= max(h, w) else tile

    def _run_with_retry(self, x: torch.Tensor, tile: int | None) -> torch.Tensor:
        m = self.record.size_multiple
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
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=self.record.name, unit="tile", leave=False)

        def tick(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(1)

        try:
            return run_tiled(
                self._run_tile,
                x,
                plan,
                scale=self.record.net_scale,
                device=self.device,
                multiple=self.record.size_multiple,
                progress=tick,
            )
        finally:
            if bar is not None:
                bar.close()

    def _run_tile(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on the device; a non-finite half-precision result is redone in fp32."""
        with torch.inference_mode():
            if self._half is not None:
                y = self._select(self._half(x.to(self.dtype)))
                if bool(torch.isfinite(y).all()):
                    return y.float()
                log.warning(
                    "%s: non-finite %s output on a tile; recomputing it in float32", self.record.name, self.dtype
                )
            return self._select(self.model(x.float()))

    def _select(self, out: Any) -> torch.Tensor:
        if self.spec.select_output is not None:
            return self.spec.select_output(out)
        return out

    def _run_tensor(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.is_floating_point(x):
            raise InputError(f"tensor inputs must be float in [0, 1], got {x.dtype}; divide by 255 (or 65535) first")
        if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
            raise InputError(f"tensor inputs must be CHW or NCHW with 1 or 3 channels, got shape {tuple(x.shape)}")
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        y = self._restore_channels(_finite_unit(batch.detach().to("cpu", torch.float32)), mask)
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
    result = transform(rkimage.read_image(src))
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


def _finite_unit(x: torch.Tensor) -> torch.Tensor:
    """Reject NaN/inf with a count (a silent clamp would hide a broken pipeline), then clamp to [0, 1]."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise InputError(f"the input has {bad} NaN or infinite values; restorekit needs finite pixels in [0, 1]")
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
        return _finite_unit(m)
    if isinstance(mask, (str, os.PathLike)):
        planar = rkimage.read_image(mask)
    else:
        to_planar = next((adapt for kind, adapt, _ in _ADAPTERS if isinstance(mask, kind)), None)
        if to_planar is None:
            raise InputError(
                f"cannot use a {type(mask).__name__} as a mask: pass a path, PIL image, numpy array or tensor"
            )
        planar = to_planar(mask)
    return _finite_unit(planar.color.mean(0, keepdim=True)[None])


def _pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pad bottom/right; reflect where the image is large enough, else replicate (a 1x1 image)."""
    h, w = x.shape[-2:]
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _resize(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling for carried-over chroma and alpha and pre-upsampled SR: MATLAB's ``imresize``."""
    from .resize import imresize

    return imresize(x, scale)
