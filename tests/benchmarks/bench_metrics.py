"""PSNR, SSIM and MATLAB bicubic imresize on a batch of 16 512x512 RGB images: restorekit (torch) vs a
straightforward numpy version of each, written here, in the same command; prints times and ratios.

The numpy versions are what a careful Python port usually looks like: PSNR on the Y channel with a
border shave; SSIM as ``ssim_index`` with a separable 11-tap Gaussian applied by shifted slices (the
efficient way to write it in plain numpy); imresize as MATLAB's ``contributions`` (weights and mirrored
indices per dimension) applied with fancy indexing and a sum over taps, image by image.

    python tests/benchmarks/bench_metrics.py --batch 16 --size 512 --repeat 3 [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from restorekit.metrics import SR, psnr, ssim
from restorekit.resize import imresize

# ----------------------------------------------------------------------------------- numpy baselines


def np_y(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1], 8-bit rounded -> Y of BT.601 (16-235) in [0, 1]."""
    x = np.floor(np.clip(x, 0, 1) * 255 + 0.5) / 255
    return (16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255


def np_psnr(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    ya, yb = np_y(a)[shave:-shave, shave:-shave], np_y(b)[shave:-shave, shave:-shave]
    return 10 * math.log10(1.0 / np.mean((ya - yb) ** 2))


def np_ssim(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    ya, yb = np_y(a)[shave:-shave, shave:-shave], np_y(b)[shave:-shave, shave:-shave]
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(z: np.ndarray) -> np.ndarray:
        h, w = z.shape[0] - 10, z.shape[1] - 10
        rows = sum(g[k] * z[k : k + h] for k in range(11))
        return sum(g[k] * rows[:, k : k + w] for k in range(11))

    c1, c2 = 0.01**2, 0.03**2
    mu1, mu2 = filt(ya), filt(yb)
    s1, s2, s12 = filt(ya * ya) - mu1**2, filt(yb * yb) - mu2**2, filt(ya * yb) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(m.mean())


def np_contributions(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    def cubic(x: np.ndarray) -> np.ndarray:
        ax = np.abs(x)
        return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
            (ax > 1) & (ax <= 2)
        )

    width = 4.0 / scale if scale < 1 else 4.0
    kernel = (lambda x: scale * cubic(scale * x)) if scale < 1 else cubic
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    idx = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
    w = kernel(u[:, None] - idx)
    w /= w.sum(1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    idx = aux[np.mod(idx.astype(int) - 1, 2 * n_in)]  # idx is 1-based, as in MATLAB
    keep = np.any(w != 0, axis=0)
    return w[:, keep], idx[:, keep]


def np_imresize(x: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) -> MATLAB imresize by ``scale`` (height first)."""
    h, w = x.shape[:2]
    wh, ih = np_contributions(h, math.ceil(h * scale - 1e-9), scale)
    x = np.einsum("ok,okwc->owc", wh, x[ih])
    ww, iw = np_contributions(w, math.ceil(w * scale - 1e-9), scale)
    return np.einsum("ok,hokc->hoc", ww, x[:, iw])


# ----------------------------------------------------------------------------------------- timing


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); numpy is 1 thread")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n, s = args.batch, args.size
    x = torch.rand(n, 3, s, s, generator=g)
    y = (x + 0.05 * torch.randn(n, 3, s, s, generator=g)).clamp(0, 1)
    xn = [np.ascontiguousarray(x[i].permute(1, 2, 0).double().numpy()) for i in range(n)]
    yn = [np.ascontiguousarray(y[i].permute(1, 2, 0).double().numpy()) for i in range(n)]
    conv = SR(4)
    print(f"batch {n} x 3 x {s} x {s}, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

    cases = [
        ("PSNR (Y, shave 4)", lambda: psnr(x, y, conv), lambda: [np_psnr(a, b, 4) for a, b in zip(xn, yn)]),
        ("SSIM (Y, shave 4)", lambda: ssim(x, y, conv), lambda: [np_ssim(a, b, 4) for a, b in zip(xn, yn)]),
        ("imresize x1/4", lambda: imresize(x, 0.25), lambda: [np_imresize(a, 0.25) for a in xn]),
        ("imresize x2", lambda: imresize(x, 2), lambda: [np_imresize(a, 2) for a in xn]),
    ]
    # Agreement first: the baselines compute the same numbers.
    np.testing.assert_allclose(psnr(x, y, conv).numpy(), [np_psnr(a, b, 4) for a, b in zip(xn, yn)], atol=1e-3)
    np.testing.assert_allclose(ssim(x, y, conv).numpy(), [np_ssim(a, b, 4) for a, b in zip(xn, yn)], atol=1e-5)
    np.testing.assert_allclose(imresize(x[:1], 0.25)[0].permute(1, 2, 0).numpy(), np_imresize(xn[0], 0.25), atol=1e-5)
    np.testing.assert_allclose(imresize(x[:1], 2)[0].permute(1, 2, 0).numpy(), np_imresize(xn[0], 2), atol=1e-5)
    print(f"{'operation':<20} {'restorekit':>11} {'numpy':>9} {'speed-up':>9} {'images/s':>9}")
    for name, ours, base in cases:
        ours()  # warm-up (weight matrices are cached per size)
        t_ours, t_base = best_of(ours, args.repeat), best_of(base, max(1, args.repeat - 1))
        print(f"{name:<20} {t_ours:10.3f}s {t_base:8.3f}s {t_base / t_ours:8.1f}x {n / t_ours:9.1f}")


if __name__ == "__main__":
    main()
