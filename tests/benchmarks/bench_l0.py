"""L0 gradient-minimisation solver vs the spatial RNN that imitates it, on one image, same process.

Times ``restorekit.filters.l0_smooth`` (lambda 0.02, kappa 2: 22 FFT alternations) and the
``spatial_rnn.smooth_l0`` network (forward, inference mode, whole image, native scan when it builds)
on a ``--size`` RGB image (default 1000 x 1000 = 1 megapixel, made by tiling a CBSD68 image when
``../shared/data`` is there, else smooth random noise), best of ``--repeat`` runs each, and prints
the ratio solver time / network time (> 1: the network is faster). Uses the bundled weights when
they are installed, else random ones (the time does not depend on the weights' values).

    python tests/benchmarks/bench_l0.py                 # add --threads N, --repeat N, --size H W, --device
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import best  # noqa: E402  (best of N runs, synchronised)


def test_image(h: int, w: int) -> torch.Tensor:
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "denoise" / "CBSD68"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if files:
        from restorekit.image import read_image

        tile = read_image(files[0]).color[None]
        reps = (-(-h // tile.shape[-2]), -(-w // tile.shape[-1]))
        return tile.repeat(1, 1, *reps)[..., :h, :w].contiguous()
    gen = torch.Generator().manual_seed(0)
    return F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=gen), size=(h, w), mode="bicubic").clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(1000, 1000), metavar=("H", "W"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from restorekit import Restorer, ops
    from restorekit.filters import iterations, l0_smooth
    from restorekit.registry import get_record

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = test_image(*args.size).to(device)
    pretrained = get_record("spatial_rnn.smooth_l0").published
    restorer = Restorer("spatial_rnn.smooth_l0", pretrained=pretrained, device=device, tile=None)
    model = restorer.model

    def network() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    l0_smooth(x[..., :64, :64], 0.02)  # warm-up (FFT plans)
    solver_s = best(lambda: l0_smooth(x, 0.02), args.repeat, sync)
    with torch.inference_mode():
        model(x[..., :64, :64])  # warm-up: loads (or builds) the scan extension, CUDA kernels
    net_s = best(network, args.repeat, sync)
    mp = args.size[0] * args.size[1] / 1e6
    print(f"image {args.size[0]}x{args.size[1]} ({mp:.2f} MP) RGB on {device}, {torch.get_num_threads()} threads")
    print(f"L0 solver (lambda 0.02, {iterations()} iterations, float32 FFTs): {solver_s:.3f} s")
    weights = "bundled weights" if pretrained else "random weights"
    print(f"spatial_rnn.smooth_l0 forward ({weights}, scan backend {ops.backend()}): {net_s:.3f} s")
    print(f"ratio solver / network: {solver_s / net_s:.2f}x")


if __name__ == "__main__":
    main()
