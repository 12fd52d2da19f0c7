"""Tile plans, blending windows and tiled inference.

The whole image stays on the CPU; only one tile at a time travels to the device. Tiles overlap
and are blended with a smooth (sin^2) window that is exactly zero within ``margin`` pixels of an
interior tile edge. With ``margin`` >= the network's receptive-field radius, every pixel that
gets a non-zero weight was computed from exactly the pixels the whole-image pass would have
used, so the normalised blend equals the whole-image result up to float rounding.

Windows are separable and the tiles form a grid, so the normalising weight sum is the outer
product of two 1-D sums: no full-size weight buffer is ever allocated.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["TilePlan", "plan_axis", "axis_windows", "run_tiled", "auto_tile_size", "free_memory", "is_oom"]


@dataclass(frozen=True)
class TilePlan:
    tile: int  # input pixels per side (a multiple of the size multiple)
    overlap: int  # minimum overlap between neighbouring tiles, input pixels
    margin: int  # weight is zero this close to an interior tile edge, input pixels


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Start/end of tiles covering ``[0, length)``: evenly spread, starts on ``multiple``.

    >>> plan_axis(10, 4, 2)
    [(0, 4), (2, 6), (4, 8), (6, 10)]
    """
    if tile >= length:
        return [(0, length)]
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    step = tile - overlap
    n = math.ceil((length - tile) / step) + 1
    # ``tile`` is an upper bound (memory); n tiles need only this much, and smaller tiles waste less
    # compute on overlap (2000 px in 1024 px tiles: 3 tiles of 732 px, not 3 of 1024 px).
    need = -(-(length + (n - 1) * overlap) // n)
    need = -(-need // multiple) * multiple + (multiple if multiple > 1 else 0)
    tile = min(tile, need)
    last = length - tile
    starts = sorted({(round(i * last / (n - 1)) // multiple) * multiple for i in range(n - 1)} | {last})
    return [(s, s + tile) for s in starts]


def axis_windows(
    spans: list[tuple[int, int]], margin: int, ramp: int, length: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """1-D blend weights for each span, and their sum over the axis (for normalisation)."""
    total = torch.zeros(length, dtype=torch.float64)
    windows = []
    k = torch.arange(ramp, dtype=torch.float64)
    rise = torch.sin(0.5 * math.pi * (k + 0.5) / ramp) ** 2
    for start, end in spans:
        w = torch.ones(end - start, dtype=torch.float64)
        if start > 0:  # interior edge on the low side
            lo = min(margin, end - start)
            w[:lo] = 0
            n = max(0, min(ramp, end - start - lo))
            w[lo : lo + n] *= rise[:n]
        if end < length:  # interior edge on the high side
            hi = min(margin, end - start)
            w[w.numel() - hi :] = 0
            n = max(0, min(ramp, end - start - hi))
            w[w.numel() - hi - n : w.numel() - hi] *= rise[:n].flip(0)
        total[start:end] += w
        windows.append(w)
    if bool((total <= 0).any()):
        raise ValueError("tile plan leaves pixels with zero total weight: increase the overlap or reduce the margin")
    return windows, total


def is_oom(err: BaseException) -> bool:
    """True for out-of-memory on any device (CUDA raises OutOfMemoryError, CPU/MPS a RuntimeError)."""
    # torch.OutOfMemoryError is the newer name; torch.cuda.OutOfMemoryError exists in every torch we support.
    if isinstance(err, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    msg = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "DefaultCPUAllocator" in msg
    )


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give us (CUDA: free memory; MPS: recommended limit minus used; CPU: available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        limit = getattr(torch.mps, "recommended_max_memory", None)  # torch >= 2.3
        if limit is not None:
            return int(limit() - torch.mps.current_allocated_memory())
        return _available_ram()  # unified memory: the system's free RAM is the bound
    return _available_ram()


def _available_ram() -> int:
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown platform: assume a modest 4 GiB


def auto_tile_size(
    footprint: float,
    free_bytes: int,
    *,
    dtype_bytes: int = 4,
    fraction: float = 0.5,
    multiple: int = 1,
    min_tile: int = 64,
    max_tile: int = 4096,
) -> int:
    """Largest square tile whose activations fit in ``fraction`` of ``free_bytes``.

    ``footprint`` is the model's measured peak activation memory per input pixel at fp32.
    """
    per_pixel = max(footprint, 1.0) * dtype_bytes / 4
    side = int(math.sqrt(max(free_bytes, 0) * fraction / per_pixel))
    side = max(min_tile, min(max_tile, side))
    return max(multiple, side // multiple * multiple)


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    plan: TilePlan,
    *,
    scale: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    multiple: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``fn`` over overlapping tiles of ``image`` (N, C, H, W on the CPU) and blend the outputs.

    ``fn`` takes a tile already on ``device`` in ``dtype`` and returns the restored tile
    (``scale`` times larger); the result is float32 on the CPU.
    """
    n, _, h, w = image.shape
    ys = plan_axis(h, plan.tile, plan.overlap, multiple)
    xs = plan_axis(w, plan.tile, plan.overlap, multiple)
    ramp = max(1, plan.overlap - 2 * plan.margin) * scale
    wy, ty = axis_windows([(a * scale, b * scale) for a, b in ys], plan.margin * scale, ramp, h * scale)
    wx, tx = axis_windows([(a * scale, b * scale) for a, b in xs], plan.margin * scale, ramp, w * scale)
    out: torch.Tensor | None = None
    done, count = 0, len(ys) * len(xs)
    for (y0, y1), wyi in zip(ys, wy):
        for (x0, x1), wxi in zip(xs, wx):
            tile = image[:, :, y0:y1, x0:x1].to(device=device, dtype=dtype, non_blocking=True)
            res = fn(tile)
            res = res.to(device="cpu", dtype=torch.float32)
            if out is None:
                out = torch.zeros(n, res.shape[1], h * scale, w * scale, dtype=torch.float32)
            weight = (wyi[:, None] * wxi[None, :]).to(torch.float32)
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale].addcmul_(res, weight)
            done += 1
            if progress is not None:
                progress(done, count)
    assert out is not None
    # Normalise in row bands so no full-size weight image is allocated.
    tx32 = tx.to(torch.float32)
    for r0 in range(0, out.shape[2], 256):
        r1 = min(r0 + 256, out.shape[2])
        out[:, :, r0:r1] /= ty[r0:r1, None].to(torch.float32) * tx32[None, :]
    return out
