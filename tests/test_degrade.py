"""Degradations: deterministic per seed, the right statistics, the right shapes, and BSD68's sigma=25 PSNR."""

import math

import numpy as np
import pytest
import torch

from restorekit import degrade as D
from restorekit.errors import InputError
from restorekit.metrics import DENOISE, psnr

from . import shared_data

SPECS = ["noise:25", "noise:sigma=15,clip", "jpeg:10", "bicubic:2", "gaussian_blur:1.6", "gaussian_blur",
         "motion_blur:15", "rain", "haze"]  # fmt: skip


@pytest.mark.parametrize("spec", SPECS)
def test_every_degradation_is_deterministic_per_seed_and_keeps_the_input(spec):
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    d = D.parse(spec)
    a, b = d(x, seed=7), d(x, seed=7)
    assert torch.equal(a, b) and torch.equal(x, before)
    assert a.shape == (2, 3, 32 // d.scale, 40 // d.scale) and a.dtype == x.dtype
    assert d.random == (spec not in ("jpeg:10", "bicubic:2", "gaussian_blur:1.6"))
    if d.random:
        assert not torch.equal(a, d(x, seed=8)), "another seed must give another degradation"
        # One generator stream: two calls draw different, but reproducible, degradations.
        g = torch.Generator().manual_seed(3)
        first, second = d(x, g), d(x, g)
        g2 = torch.Generator().manual_seed(3)
        assert torch.equal(first, d(x, g2)) and torch.equal(second, d(x, g2)) and not torch.equal(first, second)
    grey = d(x[:, :1], seed=7)
    assert grey.shape[1] == 1


def test_noise_statistics_clip_and_quantize():
    x = torch.full((1, 1, 256, 256), 0.5, dtype=torch.float64)
    n = D.gaussian_noise(x, 25, seed=0) - x
    assert float(n.std()) * 255 == pytest.approx(25, rel=0.01) and abs(float(n.mean())) < 1e-3
    edge = torch.zeros(1, 3, 64, 64)
    assert D.gaussian_noise(edge, 25, seed=0).min() < 0
    assert D.gaussian_noise(edge, 25, seed=0, clip=True).min() == 0
    q = D.gaussian_noise(edge + 0.5, 25, seed=0, quantize=True)
    assert torch.equal(q, torch.round(q * 255) / 255)
    assert torch.equal(D.gaussian_noise(x, 0, seed=0), x)
    with pytest.raises(InputError, match="0-255"):
        D.gaussian_noise(x, -1)


def test_jpeg_grey_and_colour_and_quality():
    rng = np.random.default_rng(0)
    smooth = torch.from_numpy(rng.random((1, 3, 8, 8))).float()
    x = torch.nn.functional.interpolate(smooth, size=(64, 64), mode="bilinear", align_corners=False)
    lo, hi = D.jpeg(x, 10), D.jpeg(x, 90)
    assert torch.equal(lo, torch.round(lo * 255) / 255)
    assert psnr(hi, x) > psnr(lo, x) > 20
    g = D.jpeg(x[:, :1], 30)
    assert g.shape == (1, 1, 64, 64)
    # 4:4:4 keeps more chroma than 4:2:0.
    assert psnr(D.jpeg(x, 50, subsampling="4:4:4"), x) > psnr(D.jpeg(x, 50), x)
    with pytest.raises(InputError, match="1 to 100"):
        D.jpeg(x, 0)


def test_blur_kernels():
    k = D.gaussian_kernel(21, 2.0)
    assert k.sum().item() == pytest.approx(1.0) and torch.allclose(k, k.T)
    t = torch.arange(21, dtype=torch.float64) - 10
    assert float((k.sum(0) * t * t).sum()) == pytest.approx(4.0, rel=1e-3)  # variance sigma^2
    for seed in range(5):
        m = D.motion_kernel(21, seed=seed)
        assert m.shape == (21, 21) and m.min() >= 0 and m.sum().item() == pytest.approx(1.0)
        r = D.random_gaussian_kernel(15, seed=seed)
        assert r.sum().item() == pytest.approx(1.0)
    # A delta image blurred gives the (flipped: convolution) kernel back.
    delta = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    delta[0, 0, 15, 15] = 1
    m = D.motion_kernel(11, seed=1)
    torch.testing.assert_close(D.blur(delta, m)[0, 0, 10:21, 10:21], m)
    # Blur preserves a constant image (reflect borders) and the mean of any image roughly.
    c = torch.full((2, 3, 20, 20), 0.4)
    torch.testing.assert_close(D.motion_blur(c, size=9, seed=0), c)
    with pytest.raises(InputError, match="odd"):
        D.gaussian_kernel(4, 1.0)


def test_haze_follows_the_scattering_model():
    x = torch.rand(2, 3, 24, 32)
    d = D.random_depth(2, 24, 32, seed=0)
    assert d.shape == (2, 1, 24, 32) and float(d.min()) == 0 and float(d.max()) == pytest.approx(1)
    hazy = D.haze(x, seed=0, beta=1.0, airlight=0.9)
    t = torch.exp(-D.random_depth(2, 24, 32, seed=torch.Generator().manual_seed(0))).float()
    torch.testing.assert_close(hazy, x * t + 0.9 * (1 - t))
    white = D.haze(torch.ones(1, 3, 16, 16), seed=1, airlight=1.0)
    torch.testing.assert_close(white, torch.ones(1, 3, 16, 16))


def test_rain_adds_bright_streaks_only():
    x = torch.full((1, 3, 48, 48), 0.3)
    r = D.rain(x, seed=0, density=0.01, angle=0)
    assert (r >= x).all() and (r > x).float().mean() > 0.01
    assert torch.equal(r[:, 0], r[:, 1]), "rain is white: the same streaks on every channel"


def test_masks_and_colour_hints():
    x = torch.rand(2, 3, 64, 64)
    masked, mask = D.mask_pixels(x, ratio=0.7, seed=0)
    assert mask.shape == (2, 1, 64, 64) and float(1 - mask.mean()) == pytest.approx(0.7, abs=0.03)
    assert torch.equal(masked, x * mask)
    grey, hints, hint_mask = D.color_hints(x, ratio=0.05, seed=0)
    assert grey.shape == (2, 1, 64, 64) and hints.shape == x.shape
    assert float(hint_mask.mean()) == pytest.approx(0.05, abs=0.02)
    assert torch.equal(hints, x * hint_mask)
    with pytest.raises(InputError, match="RGB"):
        D.color_hints(x[:, :1])
    assert D.colour_hints is D.color_hints  # the earlier spelling still works


def test_spec_parsing():
    assert D.parse("noise:25") == D.Degradation("noise", {"sigma": 25.0})
    assert dict(D.parse("noise:sigma=50,clip").params) == {"sigma": 50.0, "clip": True}
    assert D.parse("bicubic:3").scale == 3 and str(D.parse("jpeg:20")) == "jpeg:quality=20"
    with pytest.raises(InputError, match="noise, jpeg"):
        D.parse("blurr")
    with pytest.raises(InputError, match="no parameter"):
        D.parse("jpeg:q=10")
    with pytest.raises(InputError, match="jpeg:10"):
        D.parse("jpeg")
    with pytest.raises(InputError, match="int"):
        D.parse("bicubic:x2")
    with pytest.raises(InputError, match="multiple"):
        D.bicubic_downsample(torch.rand(1, 1, 9, 8), 2)


def test_masked_specs_mean_what_training_means():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    m, h = D.parse("mask"), D.parse("hints")
    assert (str(m), str(h), str(D.parse("mask:0.25")), str(D.parse("hints:ratio=0.1"))) == (
        "mask:0.5",
        "hints:0.03",
        "mask:0.25",
        "hints:0.1",
    )
    assert (m.condition, h.condition, D.parse("noise:5").condition) == ("mask", "hints", None) and m.random
    inp, mask = D.parse("mask:0.7").with_mask(x, seed=3)
    assert torch.equal(mask, D.mask_pixels(x, ratio=0.7, seed=3)[1]) and torch.equal(inp, x * mask)
    assert float(1 - mask.mean()) == pytest.approx(0.7, abs=0.03), "mask:RATIO is the fraction missing"
    assert torch.equal(D.parse("mask:0.7")(x, seed=3), inp)
    inp, mask = h.with_mask(x, seed=3)
    assert float(mask.mean()) == pytest.approx(0.03, abs=0.02), "hints:RATIO is the fraction with colour"
    grey = D.rgb_to_grey(x).expand(-1, 3, -1, -1)
    assert torch.equal(inp, torch.where(mask.bool(), x, grey))
    with pytest.raises(InputError, match=r"fraction of pixels missing, in \[0, 1\]"):
        D.parse("mask:1.5")
    with pytest.raises(InputError, match="has no mask"):
        D.parse("noise:5").with_mask(x)


@pytest.mark.slow
def test_bsd68_sigma25_noisy_psnr_is_the_analytic_value():
    folder = shared_data.require("denoise", "BSD68")
    values = []
    with shared_data.one_thread():
        for i, path in enumerate(sorted(folder.glob("*.png"))):
            clean = shared_data.load(path).float()
            values.append(psnr(D.gaussian_noise(clean, 25, seed=i), clean, DENOISE).item())
    assert len(values) == 68
    analytic = 20 * math.log10(255 / 25)
    assert abs(np.mean(values) - 20.17) < 0.05 and abs(np.mean(values) - analytic) < 0.05, np.mean(values)
