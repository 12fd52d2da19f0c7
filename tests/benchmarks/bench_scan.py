"""The recurrent scan's throughput against a same-size clone(), and native vs the reference loop.

On a 1 x 16 x 1024 x 1024 float32 tensor, for each direction (L->R, R->L, T->B, B->T):

- forward (reads x and g, writes h: 12 bytes per element) and forward+backward (the backward also
  reads grad, g, x, h and writes dx, dg: 36 bytes per element in all), as bytes moved per second
  relative to ``clone()`` of the same tensor (reads and writes 8 bytes per element), timed in the
  same run: the memory-bandwidth roofline;
- the native kernel against the reference's one-PyTorch-step-per-row/column loop (forward);
- the whole network (spatial_rnn, LRNN v1, random weights) on a 1-megapixel image, native vs
  reference backend, forward in inference mode.

Best of ``--repeat`` runs for everything measured in milliseconds; the reference loop and the
reference network run once. A CUDA device, when present, gets the same kernel table.

    python tests/benchmarks/bench_scan.py            # add --threads N, --repeat N, --size H W
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

DIRECTIONS = [("L->R", True, False), ("R->L", True, True), ("T->B", False, False), ("B->T", False, True)]


def best(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def kernel_table(device: str, shape: tuple[int, ...], repeat: int, with_reference: bool) -> None:
    from restorekit import ops
    from restorekit.ops import reference

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    g = (torch.rand(shape, generator=gen) * 2 - 1).to(device)
    grad = torch.randn(shape, generator=gen).to(device)
    n = x.numel()
    native = torch.ops.restorekit
    clone = best(lambda: x.clone(), repeat, sync)
    clone_bw = 8 * n / clone
    print(f"\n{device}: shape {tuple(shape)} float32, clone() {clone * 1e3:.1f} ms = {clone_bw / 1e9:.2f} GB/s")
    head = (
        f"{'direction':<9} {'fwd ms':>8} {'fwd GB/s':>9} {'x clone':>8} {'fwd+bwd ms':>11} {'GB/s':>7} {'x clone':>8}"
    )
    if with_reference:
        head += f" {'ref loop ms':>12} {'native speed-up':>16}"
    print(head)
    for name, horizontal, reverse in DIRECTIONS:
        fwd = best(lambda hz=horizontal, rv=reverse: native.scan(x, g, hz, rv), repeat, sync)

        def both(hz: bool = horizontal, rv: bool = reverse) -> None:
            h = native.scan(x, g, hz, rv)
            native.scan_backward(grad, g, x, h, hz, rv)

        fb = best(both, repeat, sync)
        row = (
            f"{name:<9} {fwd * 1e3:>8.1f} {12 * n / fwd / 1e9:>9.2f} {12 * n / fwd / clone_bw:>8.2f} "
            f"{fb * 1e3:>11.1f} {36 * n / fb / 1e9:>7.2f} {36 * n / fb / clone_bw:>8.2f}"
        )
        if with_reference:
            ref = best(lambda hz=horizontal, rv=reverse: reference.scan_forward(x, g, hz, rv), 1, sync)
            assert torch.equal(
                reference.scan_forward(x, g, horizontal, reverse), native.scan(x, g, horizontal, reverse)
            )
            row += f" {ref * 1e3:>12.1f} {ref / fwd:>15.1f}x"
        print(row)
    print(f"(backend: {ops.backend(device)}; ratios >= 1 are possible: clone() also pays for a fresh output buffer)")


def network(size: tuple[int, int], repeat: int) -> None:
    from restorekit import ops
    from restorekit.weights import build_model

    torch.manual_seed(0)
    net = build_model("spatial_rnn", {}).eval()
    x = torch.rand(1, 3, *size)
    times = {}
    outs = {}
    for backend in ("native", "reference"):
        os.environ[ops.BACKEND_ENV] = backend
        with torch.inference_mode():
            net(x[..., :32, :32])  # warm-up
            times[backend] = best(
                lambda b=backend: outs.__setitem__(b, net(x)), 1 if backend == "reference" else repeat, lambda: None
            )
    os.environ.pop(ops.BACKEND_ENV)
    same = torch.equal(outs["native"], outs["reference"])
    print(f"\nspatial_rnn (LRNN v1, random init) on 1x3x{size[0]}x{size[1]}, CPU, inference:")
    print(
        f"  native {times['native']:.2f} s/image, reference {times['reference']:.2f} s/image, "
        f"speed-up {times['reference'] / times['native']:.1f}x, outputs bit-identical: {same}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"))
    ap.add_argument("--skip-network", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from restorekit import ops

    if not ops.load_native():
        raise SystemExit(f"the native scan is unavailable: {ops.backend_info()['reason']}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, library {ops.backend_info()['library']}")
    shape = (1, 16, *args.size)
    kernel_table("cpu", shape, args.repeat, with_reference=True)
    if torch.cuda.is_available() and ops.backend("cuda") == "native":
        kernel_table("cuda", shape, args.repeat * 4, with_reference=True)
    if not args.skip_network:
        network(tuple(args.size), args.repeat)


if __name__ == "__main__":
    main()
