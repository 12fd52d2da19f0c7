import math

import pytest
import torch

from restorekit.archs.msrn import MSRN
from restorekit.tiling import TilePlan, auto_tile_size, axis_windows, is_oom, plan_axis, run_tiled


@pytest.mark.parametrize(
    "length,tile,overlap,multiple",
    [(10, 4, 2, 1), (100, 32, 8, 1), (97, 40, 10, 1), (128, 48, 16, 8), (1000, 300, 88, 4), (5, 8, 2, 1)],
)
def test_plan_axis_covers_with_overlap(length, tile, overlap, multiple):
    spans = plan_axis(length, tile, overlap, multiple)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        assert a1 - b0 >= overlap, "neighbours must overlap by at least `overlap`"
        assert b0 % multiple == 0 and b0 > a0
    sizes = {b - a for a, b in spans}
    assert len(sizes) == 1 and sizes.pop() <= min(tile, length), "equal tiles, never above the requested size"
    assert len(spans) == (1 if length <= tile else math.ceil((length - tile) / (tile - overlap)) + 1)


def test_plan_axis_shrinks_tiles_to_what_the_count_needs():
    # 2000 px in 1024 px tiles needs 3 tiles; each only has to be (2000 + 2 * 88) / 3 px wide.
    spans = plan_axis(2000, 1024, 88)
    assert len(spans) == 3 and spans[0][1] - spans[0][0] == 726


def test_windows_partition_and_zero_margin():
    spans = plan_axis(224, 64, 24)  # 224 = 64 + 4 * 40: every overlap is exactly 24
    assert [b - a for a, b in spans] == [64] * 5
    wins, total = axis_windows(spans, margin=6, ramp=12, length=224)
    assert bool((total > 0).all())
    for (a, b), w in zip(spans, wins):
        if a > 0:
            assert float(w[:6].abs().max()) == 0.0 and float(w[6]) > 0
        if b < 224:
            assert float(w[-6:].abs().max()) == 0.0
        assert float(w.max()) == 1.0
    # with equal overlaps neighbouring ramps are complementary (sin^2 + cos^2): the sum is 1
    assert torch.allclose(total, torch.ones(224, dtype=torch.float64))


def test_windows_reject_too_small_overlap():
    with pytest.raises(ValueError, match="zero total weight"):
        axis_windows([(0, 10), (9, 19)], margin=4, ramp=1, length=19)


@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("hw", [(70, 90), (131, 77)])
def test_tiled_equals_whole_for_finite_receptive_field(scale, hw):
    torch.manual_seed(0)
    # A small network with a known receptive field: 3 convs 3x3 (radius 3) + subpixel upsampler.
    layers = [
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 3 * scale * scale, 3, padding=1),
        torch.nn.PixelShuffle(scale),
    ]
    net = torch.nn.Sequential(*layers).eval()
    x = torch.rand(1, 3, *hw)
    with torch.inference_mode():
        whole = net(x)
        tiled = run_tiled(net, x, TilePlan(tile=32, overlap=14, margin=3), scale=scale)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-5


def test_tiled_msrn_equals_whole():
    torch.manual_seed(1)
    net = MSRN(scale=2, n_feats=8, n_blocks=2).eval()  # radius 1 + 2*4 + 3 = 12
    x = torch.rand(1, 3, 61, 83) * 255
    with torch.inference_mode():
        whole = net(x)
        tiled = run_tiled(net, x, TilePlan(tile=48, overlap=2 * 12 + 8, margin=12), scale=2)
    assert float((tiled - whole).abs().max()) < 1e-5 * 255


def test_margin_too_small_breaks_equality():
    # The equality above is not automatic: with no margin the tile borders differ (the test can fail).
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 5, padding=2) for _ in range(3)]).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        diff = (run_tiled(net, x, TilePlan(tile=24, overlap=4, margin=0)) - net(x)).abs().max()
    assert float(diff) > 1e-4


def test_only_tiles_travel_to_the_device():
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return t * 2

    x = torch.rand(1, 3, 100, 100)
    out = run_tiled(fn, x, TilePlan(tile=40, overlap=12, margin=2))
    assert max(s[-1] for s in seen) <= 40 and max(s[-2] for s in seen) <= 40 and len(seen) == 16
    assert torch.allclose(out, x * 2, atol=1e-6)


def test_auto_tile_size():
    side = auto_tile_size(1000.0, 4 * 1000 * 256 * 256, fraction=0.25, multiple=8)
    assert side == 256
    assert auto_tile_size(1000.0, 10, min_tile=64) == 64
    assert auto_tile_size(1.0, 1 << 40, max_tile=4096) == 4096
    half = auto_tile_size(1000.0, 4 * 1000 * 256 * 256, fraction=0.25, dtype_bytes=2)
    assert half == int(256 * math.sqrt(2))


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))
