"""Pure-PyTorch gated linear recurrence: the fallback backend and the test oracle.

h_t = (1 - g_t) * x_t + g_t * h_{t-1}, h_{-1} = 0, along the width (``horizontal``) or the height
of the last two dimensions, forward or ``reverse``. The loop is one step per row or column, so it
is slow; the native kernels in ``csrc/`` compute the same numbers in one pass.

Rounding: every step rounds exactly as the kernels do (a = 1 - g, b = a * x, c = g * h, h = b + c,
each rounded once, no fused multiply-add), so float32 results are bit-identical to the native
backend. float16/bfloat16 accumulate in float32 and round only the stored output; float64 stays
float64.
"""

from __future__ import annotations

import torch

__all__ = ["scan_forward", "scan_backward", "opmath_dtype"]


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the recurrence is computed in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _steps(x: torch.Tensor, horizontal: bool) -> tuple[int, int]:
    dim = x.ndim - 1 if horizontal else x.ndim - 2
    return dim, x.shape[dim]


def _check(x: torch.Tensor, g: torch.Tensor) -> None:
    if x.ndim < 2:
        raise ValueError(f"scan needs at least 2 dimensions (..., H, W), got shape {tuple(x.shape)}")
    if x.shape != g.shape:
        raise ValueError(f"scan needs one gate per element: x has shape {tuple(x.shape)}, g {tuple(g.shape)}")
    if x.dtype != g.dtype or x.device != g.device:
        raise ValueError(f"x and g must share dtype and device, got {x.dtype}/{x.device} and {g.dtype}/{g.device}")


def scan_forward(x: torch.Tensor, g: torch.Tensor, horizontal: bool, reverse: bool) -> torch.Tensor:
    """The recurrence's output h, same shape and dtype as ``x`` (no autograd graph of the loop)."""
    _check(x, g)
    dim, steps = _steps(x, horizontal)
    acc = opmath_dtype(x.dtype)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    with torch.no_grad():
        # h_{-1} = 0 goes through the same ops as every other step (keeps the sign of zeros identical too).
        h = torch.zeros_like(x.select(dim, 0), dtype=acc)
        for t in order:
            xt = x.select(dim, t).to(acc)
            gt = g.select(dim, t).to(acc)
            h = (1 - gt) * xt + gt * h
            out.select(dim, t).copy_(h)
    return out


def scan_backward(
    grad: torch.Tensor, g: torch.Tensor, x: torch.Tensor, h: torch.Tensor, horizontal: bool, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (dx, dg) of the loss given dLoss/dh = ``grad`` and the forward's output ``h``.

    In scan order: d_t = grad_t + g_{t+1} * d_{t+1} (from the last step back), dx_t = (1 - g_t) * d_t,
    dg_t = (h_{t-1} - x_t) * d_t with h_{-1} = 0.
    """
    _check(x, g)
    dim, steps = _steps(x, horizontal)
    acc = opmath_dtype(x.dtype)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dg = torch.empty_like(x, memory_format=torch.contiguous_format)
    order = list(range(steps - 1, -1, -1) if reverse else range(steps))
    with torch.no_grad():
        d = torch.zeros_like(x.select(dim, 0), dtype=acc)
        g_next = torch.zeros_like(d)  # g_T = 0: nothing flows back from beyond the last step
        for i in range(steps - 1, -1, -1):  # walk the scan order backwards
            t = order[i]
            gt = g.select(dim, t).to(acc)
            d = grad.select(dim, t).to(acc) + g_next * d
            dx.select(dim, t).copy_((1 - gt) * d)
            h_prev = h.select(dim, order[i - 1]).to(acc) if i > 0 else torch.zeros_like(d)
            dg.select(dim, t).copy_((h_prev - x.select(dim, t).to(acc)) * d)
            g_next = gt
    return dx, dg
