"""Training data: clean folders degraded on the fly, paired folders and CSV lists, cropped and augmented.

Sources (``TrainConfig.data``, several allowed and concatenated):

* a folder of clean images, degraded per sample by one of ``TrainConfig.degradations`` (several = mixed
  tasks for all-in-one training): :mod:`restorekit.degrade` specs, plus ranges drawn per sample
  (``noise:0-55``, ``jpeg:10-40``), ``mask:0.5`` (inpainting: half the pixels missing) and ``hints:0.03``
  (colourisation: the true colour at 3 % of the pixels);
* a paired folder: ``input/`` + ``target/``, ``LR/`` + ``HR/`` or ``x{scale}/LR`` + ``x{scale}/HR``, by file name;
* a CSV list with a header: ``target`` and optionally ``input`` and ``degradation`` columns (DSRIR-style
  lists; relative paths are relative to the CSV file).

Every random choice of a sample (crop, flip, rotation, which degradation, its parameters and noise) comes
from one generator seeded by ``(seed, epoch, index)``, so a run and its resumption see the same pixels, with
any number of workers. Images are decoded once at start-up (corrupt ones are dropped with one warning each)
and kept in memory while they fit in ``cache_bytes``.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .. import degrade
from ..color import rgb_to_ycbcr
from ..errors import InputError
from ..feeding import pack
from ..folders import find_pairs, image_files
from ..image import IMAGE_EXTENSIONS, read_array
from ..resize import imresize
from ..specs import Range

__all__ = ["Item", "DegradationSpec", "find_items", "TrainDataset", "EpochSampler", "sample_seed"]


@dataclass(frozen=True)
class Item:
    target: Path
    input: Path | None = None  # None: degrade the target on the fly
    degradation: str | None = None  # per-item spec (CSV lists); None: one of the configured ones


class DegradationSpec:
    """One training degradation; ``apply(x, gen)`` -> (network input, target) for a (1, C, H, W) batch."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.strip()
        # The shared grammar (restorekit.specs), ranges allowed: base holds each range's low end.
        self.base, ranges = degrade.parse_ranged(self.spec)
        self.name = self.base.name
        self.ranges: dict[str, Range] = ranges
        # The positional parameter's range as (low, high), as before keyword ranges existed; None when fixed.
        positional = ranges.get(degrade.RANGED.get(self.name, ("",))[0])
        self.range = None if positional is None else (positional.low, positional.high)

    @property
    def scale(self) -> int:
        return self.base.scale

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.base.condition is not None:  # mask:RATIO / hints:RATIO: the input as evaluation builds it
            return pack(*self.base.with_mask(x, seed=gen))  # the mask channel last (restorekit.feeding)
        deg = self.base
        if self.ranges:
            drawn = dict(deg.params)
            for key, bounds in self.ranges.items():  # one uniform draw per ranged parameter, in spec order
                kind = type(deg.params[key])
                value = bounds.low + (bounds.high - bounds.low) * float(torch.rand((), generator=gen))
                if (deg.name, key) in degrade.ODD:  # a kernel size: the odd integer nearest the draw, inside the range
                    odd = 2 * math.floor(value / 2) + 1
                    value = odd if odd <= bounds.high else odd - 2
                drawn[key] = kind(round(value) if kind is int else value)
            deg = degrade.Degradation(deg.name, drawn)
        return deg(x, seed=gen).float()


def _csv_items(path: Path) -> list[Item]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the CSV list {path}: {exc}") from None
    if not rows or "target" not in rows[0]:
        raise InputError(
            f"{path}: a CSV list needs a header with a 'target' column (and optional 'input', 'degradation')"
        )
    items = []
    for row in rows:
        tgt = (path.parent / row["target"].strip()) if row.get("target") else None
        if tgt is None:
            continue
        inp = row.get("input") or ""
        deg = (row.get("degradation") or "").strip() or None
        items.append(Item(tgt, path.parent / inp.strip() if inp.strip() else None, deg))
    return items


def find_items(sources: Sequence[str], kind: str = "auto", scale: int = 1) -> tuple[list[Item], list[str]]:
    """Every training item of ``sources`` and a description per source; clear errors before any work."""
    if not sources:
        raise InputError("no training data: pass --data FOLDER (clean images, input/+target/, LR/+HR/) or a CSV list")
    items: list[Item] = []
    described: list[str] = []
    for src in sources:
        path = Path(src)
        if not path.exists():
            raise InputError(f"training data {path} does not exist; pass an image folder or a CSV list")
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise InputError(f"{path} is a file: pass a folder of images or a .csv list")
            found, layout = _csv_items(path), "csv"
        elif kind == "csv":
            raise InputError(f"{path}: --data-kind csv needs a .csv file")
        elif kind == "clean":
            found, layout = [Item(p) for p in image_files(path)], "clean images"
        else:  # the same folder layouts as `restorekit eval` (x{scale}/LR+HR, LR+HR, input+target, clean)
            layout, pairs = find_pairs(path, scale if scale > 1 else None)
            if kind == "paired" and layout == "clean images":
                raise InputError(f"{path} is not a paired folder: it needs input/ + target/ or LR/ + HR/ subfolders")
            found = [Item(tgt, inp) for _, inp, tgt in pairs]
            layout = layout if layout == "clean images" else f"paired {layout}"
        if not found:
            raise InputError(
                f"training data {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "put images in it or pass another folder"
            )
        items += found
        described.append(f"{path} ({layout}, {len(found)} items)")
    return items, described


def _decode(path: Path) -> np.ndarray:
    """The pixels evaluation reads (``read_image(path).color``), kept as integers to fill the cache less: upright
    (EXIF), 16 bits kept, grey stays grey, alpha dropped. (H, W, 1 or 3), uint8 or uint16 (float32: float TIFF)."""
    arr = read_array(path)
    return np.ascontiguousarray(arr[:, :, :-1]) if arr.shape[2] in (2, 4) else arr


def _unit(t: torch.Tensor) -> torch.Tensor:
    """Decoded pixels as float32 in [0, 1], divided as :func:`restorekit.image.read_image` divides them."""
    if t.dtype == torch.uint8:
        return t.float() / 255
    if t.dtype == torch.uint16:
        return t.float() / 65535
    return t.float()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample: a hash of (run seed, epoch, dataset index)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class TrainDataset(Dataset):
    """Random training patches; indexed by ``(epoch, index)`` pairs (:class:`EpochSampler`).

    A sample is ``(input, target)``, float32 CHW in [0, 1]: ``input`` is ``patch`` pixels square (plus the mask
    channel of inpainting/colourisation networks) and ``target`` is ``patch * scale`` (``patch`` when the
    network runs on a pre-upsampled input, ``pre_upsample``).
    """

    def __init__(
        self,
        items: Sequence[Item],
        *,
        patch: int,
        scale: int = 1,
        degradations: Sequence[str] = (),
        in_channels: int = 3,
        pre_upsample: bool = False,
        seed: int = 0,
        augment: bool = True,
        cache_bytes: int = 2 << 30,
    ) -> None:
        self.patch, self.scale, self.pre_upsample = int(patch), int(scale), bool(pre_upsample)
        self.in_channels, self.seed, self.augment = int(in_channels), int(seed), bool(augment)
        self.degradations = [DegradationSpec(d) for d in degradations]
        self._specs: dict[str, DegradationSpec] = {d.spec: d for d in self.degradations}
        for spec in self.degradations:
            if spec.scale not in (1, self.scale):
                raise InputError(
                    f"the degradation {spec.spec} downscales by {spec.scale}, but the model works at x{self.scale}"
                )
        need_target = self.patch if self.pre_upsample else self.patch * self.scale
        kept: list[Item] = []
        self._cache: dict[Path, np.ndarray] = {}
        used, small = 0, 0
        for item in items:
            if item.input is None and item.degradation is None and not self.degradations:
                raise InputError(
                    f"{item.target} is a clean image but no degradation is configured: pass --degradations "
                    "(e.g. noise:0-55, bicubic:4, jpeg:10) or paired data (input/ + target/)"
                )
            if item.degradation is not None and item.degradation not in self._specs:
                self._specs[item.degradation] = DegradationSpec(item.degradation)
            arrays = {}
            try:
                for path in (item.target, item.input):
                    if path is not None:
                        arrays[path] = self._cache.get(path)
                        if arrays[path] is None:
                            arrays[path] = _decode(path)
            except Exception as exc:  # corrupt, truncated, unreadable: skip the item, say so once
                warnings.warn(f"skipping {path}: cannot decode it ({type(exc).__name__}: {exc})", stacklevel=2)
                continue
            th, tw = arrays[item.target].shape[:2]
            if min(th, tw) < need_target:
                small += 1
                warnings.warn(
                    f"skipping {item.target}: {tw}x{th} is smaller than the {need_target}-pixel patch", stacklevel=2
                )
                continue
            if item.input is not None:
                ih, iw = arrays[item.input].shape[:2]
                s = 1 if self.pre_upsample else self.scale
                if not (ih * s <= th < ih * s + s and iw * s <= tw < iw * s + s):
                    raise InputError(
                        f"{item.input} ({iw}x{ih}) x{s} does not match its target {item.target} ({tw}x{th})"
                    )
            for path, arr in arrays.items():
                if path not in self._cache and used + arr.nbytes <= cache_bytes:
                    self._cache[path] = arr
                    used += arr.nbytes
            kept.append(item)
        if not kept:
            why = (
                f"all {len(items)} are smaller than the patch ({need_target} px): lower --patch-size"
                if small
                else ("none could be decoded (see the warnings)")
            )
            raise InputError(f"no usable training images: {why}")
        self.items = kept
        self.cached_bytes = used

    def __len__(self) -> int:
        return len(self.items)

    def _array(self, path: Path) -> np.ndarray:
        arr = self._cache.get(path)
        return arr if arr is not None else _decode(path)

    def _prepare(self, t: torch.Tensor) -> torch.Tensor:
        # What the Restorer feeds the network: a grey network gets Y of colour and grey as it is; a colour one
        # gets grey as three equal channels.
        if self.in_channels == 1:
            return t if t.shape[1] == 1 else rgb_to_ycbcr(t)[:, :1]
        return t.repeat(1, 3, 1, 1) if t.shape[1] == 1 else t

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        item = self.items[index]
        target = torch.from_numpy(self._array(item.target)).permute(2, 0, 1)[None]
        s = self.scale
        if item.input is not None:  # paired: aligned crops (the LR patch and its x scale HR patch)
            inp = torch.from_numpy(self._array(item.input)).permute(2, 0, 1)[None]
            ps, ts = (self.patch, self.patch) if self.pre_upsample else (self.patch, self.patch * s)
            step = 1 if self.pre_upsample else s
            y = int(torch.randint(inp.shape[-2] - ps + 1, (), generator=gen))
            x = int(torch.randint(inp.shape[-1] - ps + 1, (), generator=gen))
            inp = _unit(inp[..., y : y + ps, x : x + ps])
            target = _unit(target[..., y * step : y * step + ts, x * step : x * step + ts])
            inp, target = self._augment([inp, target], gen)
            return self._prepare(inp)[0], self._prepare(target)[0]
        spec = self._specs[item.degradation] if item.degradation is not None else self._choose(gen)
        size = math.ceil(self.patch / s) * s if self.pre_upsample else self.patch * s
        y = int(torch.randint(target.shape[-2] - size + 1, (), generator=gen))
        x = int(torch.randint(target.shape[-1] - size + 1, (), generator=gen))
        target = _unit(target[..., y : y + size, x : x + size])
        (target,) = self._augment([target], gen)
        target = self._prepare(target)
        inp = spec.apply(target, gen)
        if self.pre_upsample and spec.scale > 1:  # MemNet SR: the network sees the bicubic-upsampled LR
            inp = imresize(inp, spec.scale)
        if self.pre_upsample:
            inp, target = inp[..., : self.patch, : self.patch], target[..., : self.patch, : self.patch]
        return inp[0].contiguous(), target[0].contiguous()

    def _choose(self, gen: torch.Generator) -> DegradationSpec:
        if len(self.degradations) == 1:
            return self.degradations[0]
        return self.degradations[int(torch.randint(len(self.degradations), (), generator=gen))]

    def _augment(self, images: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
        if not self.augment:
            return images
        flip, rot = torch.randint(2, (), generator=gen), torch.randint(4, (), generator=gen)
        if flip:
            images = [t.flip(-1) for t in images]
        return [torch.rot90(t, int(rot), (-2, -1)) for t in images]


class EpochSampler(Sampler):
    """An endless stream of ``(epoch, index)``: a seeded permutation per epoch, sharded over ``world`` ranks.

    Like ``DistributedSampler`` each rank takes every ``world``-th index of the epoch's permutation (the
    permutation is wrapped to a multiple of ``world``), so the ranks' first batches together are the first
    ``world * batch`` indices a single process would take. ``start`` samples of this rank's stream are
    skipped, which is how a resumed run continues exactly where it stopped.
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.n, self.seed, self.rank, self.world, self.start = n, int(seed), rank, world, int(start)
        self.per_rank = math.ceil(n / world)

    def position(self, consumed: int) -> tuple[int, int]:
        """(epoch, offset in this rank's shard) after ``consumed`` samples."""
        return divmod(consumed, self.per_rank)

    def _shard(self, epoch: int) -> list[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)).tolist()
        total = self.per_rank * self.world
        perm = (perm * math.ceil(total / self.n))[:total]
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[Any]:
        epoch, offset = self.position(self.start)
        while True:
            for index in self._shard(epoch)[offset:]:
                yield (epoch, index)
            epoch, offset = epoch + 1, 0
