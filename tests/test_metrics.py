"""PSNR/SSIM and their conventions, against closed forms, a plain numpy ssim_index, and the published tables."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from restorekit.errors import InputError
from restorekit.metrics import DENOISE, JPEG, SR, Convention, get_convention, prepare, psnr, ssim
from restorekit.resize import imresize

from . import shared_data


def _ssim_index_numpy(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Wang et al.'s ssim_index.m in numpy: fspecial('gaussian', 11, 1.5), filter2 'valid', mean of the map."""
    t = np.arange(11) - 5.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(z):
        win = np.lib.stride_tricks.sliding_window_view(z, (11, 11))
        return np.einsum("ijkl,kl->ij", win, g)

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(m.mean())


def test_psnr_closed_form_and_batch():
    x = torch.full((3, 1, 8, 8), 0.5)
    y = x + torch.tensor([0.1, 0.01, 0.0]).view(3, 1, 1, 1)
    p = psnr(x, y)
    assert p.shape == (3,)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4) and p[1].item() == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(p[2].item())
    # peak scales the signal: images in 0..255 with peak 255 give the same figure.
    assert psnr(x * 255, y * 255, Convention("u8", peak=255))[0].item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_the_reference_formula():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 30, 26))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    got = ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = [np.mean([_ssim_index_numpy(a[n, c], b[n, c]) for c in range(3)]) for n in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-10)
    f32 = ssim(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()
    np.testing.assert_allclose(f32, want, atol=1e-5)
    same = torch.from_numpy(a)
    torch.testing.assert_close(ssim(same, same), torch.ones(2, dtype=torch.float64))
    ab, ba = ssim(torch.from_numpy(a), torch.from_numpy(b)), ssim(torch.from_numpy(b), torch.from_numpy(a))
    torch.testing.assert_close(ab, ba)


def test_y_channel_quantisation_and_grey_conventions():
    v = torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    y = prepare(v, Convention("y", color="y"))
    torch.testing.assert_close(y[0, 0, 0], (16 + 219 * torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)) / 255)
    grey = v[:, :1]
    torch.testing.assert_close(prepare(grey, Convention("y", color="y", grey="as_rgb")), y)
    torch.testing.assert_close(prepare(grey, Convention("y", color="y", grey="raw")), grey)
    # 8-bit rounding is half up (MATLAB's im2uint8), after clamping.
    q = prepare(torch.tensor([-0.1, 0.5 / 255, 1.5 / 255, 1.2], dtype=torch.float64).view(1, 1, 1, 4), JPEG)
    assert (q[0, 0, 0] * 255).tolist() == pytest.approx([0.0, 1.0, 2.0, 255.0])
    # The studio swing compresses differences by 219/255: exactly +20 log10(255/219) dB for a grey image.
    a, b = torch.rand(1, 1, 20, 20, dtype=torch.float64), torch.rand(1, 1, 20, 20, dtype=torch.float64)
    raw = Convention("r", color="y", grey="raw")
    as_rgb = Convention("r", color="y", grey="as_rgb")
    assert (psnr(a, b, as_rgb) - psnr(a, b, raw)).item() == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)


def test_crop_presets_and_errors():
    x = torch.rand(1, 3, 20, 24)
    assert prepare(x, SR(4)).shape == (1, 1, 12, 16)
    assert prepare(x, DENOISE).shape == x.shape
    assert SR(3) == get_convention("y_shave_scale", 3) and SR(3).crop == 3 and SR(3).quantize
    assert get_convention("y_shave_scale:as_rgb", 2).grey == "as_rgb" and get_convention("full_image") is DENOISE
    assert "shave 4 px" in SR(4).describe() and "y_shave_scale" in SR(4).describe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        SR(2).crop = 5
    with pytest.raises(InputError, match="y_shave_scale"):
        get_convention("ycbcr")
    with pytest.raises(InputError, match="same shape"):
        psnr(x, x[..., :10])
    with pytest.raises(InputError, match="too small"):
        psnr(x[..., :6, :6], x[..., :6, :6], SR(4))
    with pytest.raises(InputError, match="11x11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(InputError, match="crop"):
        Convention("bad", crop=-1)


def _bicubic_baseline(dataset: str, scale: int, *conventions) -> list[tuple[float, float]]:
    """Mean (PSNR, SSIM) of MATLAB-bicubic upsampled LR files against HR, under each convention."""
    folder = shared_data.require("sr", dataset, f"x{scale}")
    rows = []
    with shared_data.one_thread():
        for hr_path in sorted((folder / "HR").glob("*.png")):
            hr, lr = shared_data.load(hr_path).float(), shared_data.load(folder / "LR" / hr_path.name).float()
            up = imresize(lr, scale, quantize=True)  # MATLAB imresize on the uint8 LR image
            rows.append([(psnr(up, hr, c).item(), ssim(up, hr, c).item()) for c in conventions])
    return [tuple(v) for v in np.mean(rows, axis=0)]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bicubic_reproduces_the_published_table(scale):
    want_p, want_s = shared_data.published_bicubic()[("Set5", scale)]
    [(p, s)] = _bicubic_baseline("Set5", scale, SR(scale))
    assert abs(p - want_p) < 0.05 and abs(s - want_s) < 0.002, (p, s, want_p, want_s)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set14_bicubic_within_the_published_table_under_both_grey_conventions(scale):
    want_p, want_s = shared_data.published_bicubic()[("Set14", scale)]
    # img_003 (grey) by its raw values (the default), and its Y taken as if it were RGB.
    raw, as_rgb = _bicubic_baseline("Set14", scale, SR(scale), SR(scale, grey="as_rgb"))
    assert abs(raw[0] - want_p) < 0.15 and abs(raw[1] - want_s) < 0.002, (raw, want_p, want_s)
    assert abs(as_rgb[0] - want_p) < 0.15, (as_rgb, want_p)
    # Only img_003 differs, by exactly 20 log10(255/219) dB, spread over the 14 images.
    assert as_rgb[0] - raw[0] == pytest.approx(20 * math.log10(255 / 219) / 14, abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checks GPU results against the CPU)")
def test_cuda_results_match_the_cpu():
    from restorekit import degrade

    x = torch.rand(3, 3, 40, 36)
    y = degrade.gaussian_noise(x, 10, seed=0, clip=True)
    torch.testing.assert_close(degrade.gaussian_noise(x.cuda(), 10, seed=0, clip=True).cpu(), y)
    torch.testing.assert_close(degrade.haze(x.cuda(), seed=1).cpu(), degrade.haze(x, seed=1), atol=1e-6, rtol=0)
    torch.testing.assert_close(imresize(x.cuda(), 0.5).cpu(), imresize(x, 0.5), atol=1e-5, rtol=0)
    for fn in (psnr, ssim):
        torch.testing.assert_close(fn(x.cuda(), y.cuda(), SR(2)).cpu(), fn(x, y, SR(2)), atol=1e-4, rtol=0)
