"""L0 gradient minimisation (restorekit.filters): the solver, `restorekit run l0smooth` and `eval --target`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.cli import main
from restorekit.errors import InputError
from restorekit.evaluate import evaluate
from restorekit.filters import L0Smooth, iterations, l0_smooth, parse_filter
from restorekit.image import read_image
from restorekit.metrics import DENOISE, psnr


def _numpy_l0(img: np.ndarray, lam: float, kappa: float = 2.0, beta_max: float = 1e5) -> np.ndarray:
    """The paper's solver written the other way round: complex FFTs of the zero-padded difference
    kernels (psf2otf) and the divergence built by concatenating differences, per Xu et al. 2011."""
    h, w, _ = img.shape

    def otf(kernel):
        pad = np.zeros((h, w))
        pad[: kernel.shape[0], : kernel.shape[1]] = kernel
        return np.fft.fft2(pad)  # the kernel's origin is its first tap, as psf2otf puts it for [1, -1]

    denorm2 = (np.abs(otf(np.array([[-1.0, 1.0]]))) ** 2 + np.abs(otf(np.array([[-1.0], [1.0]]))) ** 2)[..., None]
    f_in = np.fft.fft2(img, axes=(0, 1))
    s, beta = img.copy(), 2 * lam
    while beta < beta_max:
        dh = np.concatenate([np.diff(s, axis=1), s[:, :1] - s[:, -1:]], axis=1)
        dv = np.concatenate([np.diff(s, axis=0), s[:1] - s[-1:]], axis=0)
        flat = ((dh**2 + dv**2).sum(2) < lam / beta)[..., None]
        dh, dv = np.where(flat, 0, dh), np.where(flat, 0, dv)
        div = np.concatenate([dh[:, -1:] - dh[:, :1], -np.diff(dh, axis=1)], axis=1)
        div += np.concatenate([dv[-1:] - dv[:1], -np.diff(dv, axis=0)], axis=0)
        s = np.real(np.fft.ifft2((f_in + beta * np.fft.fft2(div, axes=(0, 1))) / (1 + beta * denorm2), axes=(0, 1)))
        beta *= kappa
    return s


def _blocks(seed=0, noise=0.03, size=(48, 56)):
    """Piecewise-constant colour image plus Gaussian noise: (clean, noisy), (1, 3, H, W) float64."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.zeros(1, 3, *size, dtype=torch.float64)
    clean[..., 10:30, 12:40] = torch.tensor([0.8, 0.3, 0.5], dtype=torch.float64)[:, None, None]
    clean[..., 34:, 5:20] = 0.6
    noisy = clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return clean, noisy


def _l0_energy(s: torch.Tensor, img: torch.Tensor, lam: float) -> float:
    """|S - I|^2 + lam * #(pixels with a non-zero periodic gradient), per Xu et al."""
    dh = torch.roll(s, -1, -1) - s
    dv = torch.roll(s, -1, -2) - s
    count = ((dh.abs() + dv.abs()).sum(1) > 1e-3).sum()
    return float((s - img).square().sum() + lam * count)


def test_matches_an_independent_numpy_solver():
    _, noisy = _blocks()
    ref = _numpy_l0(noisy[0].permute(1, 2, 0).numpy(), 0.02)
    ours = l0_smooth(noisy, 0.02)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-9


def test_flattens_noise_into_sparse_gradients_and_lowers_the_l0_energy():
    clean, noisy = _blocks()
    out = l0_smooth(noisy, 0.02)
    assert (out - clean).abs().mean() < 0.5 * (noisy - clean).abs().mean()
    grad = (torch.roll(out, -1, -1) - out).abs().sum(1)
    noisy_grad = (torch.roll(noisy, -1, -1) - noisy).abs().sum(1)
    assert (grad > 1e-3).float().mean() < 0.15 < (noisy_grad > 1e-3).float().mean()
    assert _l0_energy(out, noisy, 0.02) < 0.5 * _l0_energy(noisy, noisy, 0.02)
    # A larger lambda leaves fewer edges.
    edges = lambda y: int(((torch.roll(y, -1, -1) - y).abs().sum(1) > 1e-3).sum())  # noqa: E731
    assert edges(l0_smooth(noisy, 0.2)) < edges(out)


def test_float32_agrees_with_float64_batches_and_shapes():
    _, noisy = _blocks(seed=1)
    ref = l0_smooth(noisy, 0.02)
    f32 = l0_smooth(noisy.float(), 0.02)
    assert f32.dtype == torch.float32 and (f32.double() - ref).abs().max() < 1e-3
    _, other = _blocks(seed=2)
    both = l0_smooth(torch.cat([noisy, other]), 0.02)  # the flat test is per image, never across the batch
    assert torch.allclose(both[1:], l0_smooth(other, 0.02), atol=1e-12)
    assert l0_smooth(noisy[0], 0.02).shape == noisy[0].shape  # (C, H, W) in, (C, H, W) out
    odd = torch.rand(1, 1, 13, 7, dtype=torch.float64)
    assert l0_smooth(odd, 0.05).shape == odd.shape
    # Grey: the numpy reference with one channel.
    grey_ref = _numpy_l0(odd[0].permute(1, 2, 0).numpy(), 0.05)[..., 0]
    assert np.abs(l0_smooth(odd, 0.05)[0, 0].numpy() - grey_ref).max() < 1e-9


def test_schedule_and_parameter_errors():
    assert iterations() == 22  # beta = 0.04 * 2^k < 1e5
    assert iterations(0.02, kappa=4.0) == 11
    for bad in (dict(lam=0), dict(lam=0.02, kappa=1.0), dict(lam=0.02, beta_max=0.01)):
        with pytest.raises(InputError):
            l0_smooth(torch.rand(1, 3, 8, 8), **bad)
    with pytest.raises(InputError, match="tensor"):
        l0_smooth(np.zeros((8, 8)))  # type: ignore[arg-type]
    assert parse_filter("l0smooth:0.05").lam == 0.05
    f = parse_filter("l0smooth:lam=0.01,kappa=1.5")
    assert (f.lam, f.kappa) == (0.01, 1.5)
    for spec in ("median:3", "l0smooth:gamma=2", "l0smooth:abc", "l0smooth:0.02,2"):
        with pytest.raises(InputError):
            parse_filter(spec)


def test_run_l0smooth_cli_writes_files_and_keeps_alpha(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    rgba = (rng.random((20, 24, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(src / "a.png")
    Image.fromarray((rng.random((17, 9)) * 255).astype(np.uint8)).save(src / "g.png")
    assert main(["run", "l0smooth", str(src), "-o", str(tmp_path / "out"), "--lam", "0.05", "--no-progress"]) == 0
    assert "2 written" in capsys.readouterr().out
    a = read_image(tmp_path / "out" / "a.png")
    assert a.alpha is not None and torch.equal(a.alpha, read_image(src / "a.png").alpha)
    colour = read_image(src / "a.png").color[None]
    expect = (L0Smooth(0.05)(colour)[0] * 255).round() / 255
    assert torch.allclose(a.color, expect, atol=1.5 / 255)
    assert read_image(tmp_path / "out" / "g.png").color.shape == (1, 17, 9)
    # The filter spec form, and the errors.
    assert main(["run", "l0smooth:0.1", str(src / "g.png"), "-o", str(tmp_path / "o2"), "--no-progress"]) == 0
    assert main(["run", "l0smooth", str(src), "-o", str(tmp_path / "o3"), "--weights", "x.safetensors"]) == 1
    assert "classical filter" in capsys.readouterr().err
    assert main(["run", "identity_missing_model", str(src), "-o", str(tmp_path / "o4"), "--lam", "0.1"]) == 1
    assert "--lam" in capsys.readouterr().err


def test_eval_target_scores_against_the_filtered_clean_image(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "clean"
    data.mkdir()
    for i in range(2):
        Image.fromarray((rng.random((24, 30, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    res = evaluate("identity", data, target="l0smooth:0.02", progress=False)
    assert res.degradation == "target l0smooth:0.02"
    for row in res.images:
        x = read_image(data / row.name).color[None]
        assert row.psnr == pytest.approx(float(psnr(x, l0_smooth(x, 0.02).clamp(0, 1), DENOISE)[0]), abs=1e-4)
    out = tmp_path / "r.json"
    argv = ["eval", "identity", "--data", str(data), "--target", "l0smooth:0.02", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["mean"]["psnr"] == pytest.approx(res.psnr)
    with pytest.raises(InputError, match="paired"):
        pairs = tmp_path / "pairs"
        for sub in ("input", "target"):
            (pairs / sub).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(pairs / sub / "a.png")
        evaluate("identity", pairs, target="l0smooth", progress=False)
