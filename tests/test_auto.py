"""Restorer("auto"): the choice logic on constructed measurements, and end to end on real images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import Restorer
from restorekit.analysis import Analysis, Finding
from restorekit.auto import DENOISE_CROSSOVER, available_models, plan
from restorekit.errors import InputError
from tests import shared_data

BUNDLED = {"spatial_rnn.denoise", "dsrir.denoise", "dsrir.derain", "dsrir.dehaze"}
MEMNET = {"memnet.denoise_s30", "memnet.denoise_s50", "memnet.denoise_s70", "memnet.jpeg_q10", "memnet.jpeg_q20"}


def measured(
    noise: float | None = None,
    jpeg: int | None = None,
    rain: bool | None = False,
    haze: bool | None = False,
    noise_present: bool | None = None,
) -> Analysis:
    """An Analysis as analyze would report it: noise σ / JPEG quality when given, else absent."""
    present = noise is not None if noise_present is None else noise_present
    findings = (
        Finding("jpeg", jpeg is not None, None if jpeg is None else float(jpeg), 1.0, "quantisation tables"),
        Finding("noise", present, noise, 0.9, "patch PCA"),
        Finding("haze", haze, 0.6 if haze else 0.1, 0.8, "dark channel"),
        Finding("rain", rain, 0.7 if rain else 0.0, 0.8, "streaks"),
    )
    return Analysis(findings, (64, 64), 3, "photo.png")


def test_clean_plans_nothing() -> None:
    p = plan(measured(), available=BUNDLED | MEMNET)
    assert p.unchanged and p.steps == ()
    assert "clean" in p.reason


@pytest.mark.parametrize(
    ("sigma", "expected"),
    [
        (5.0, "spatial_rnn.denoise"),
        (15.0, "spatial_rnn.denoise"),
        (25.0, "spatial_rnn.denoise"),
        (DENOISE_CROSSOVER - 0.5, "spatial_rnn.denoise"),
        (DENOISE_CROSSOVER, "dsrir.denoise"),
        (50.0, "dsrir.denoise"),
        (75.0, "dsrir.denoise"),
    ],
)
def test_noise_bundled_by_sigma(sigma: float, expected: str) -> None:
    p = plan(measured(noise=sigma), available=BUNDLED)
    assert p.models == [expected]
    assert f"{sigma:.1f}" in p.steps[0].reason and expected in p.explain()


@pytest.mark.parametrize(
    ("sigma", "expected"), [(31.0, "memnet.denoise_s30"), (48.0, "memnet.denoise_s50"), (90.0, "memnet.denoise_s70")]
)
def test_noise_memnet_nearest_when_available(sigma: float, expected: str) -> None:
    assert plan(measured(noise=sigma), available=BUNDLED | MEMNET).models == [expected]
    # below the MemNet range the bundled denoiser still wins
    assert plan(measured(noise=15.0), available=BUNDLED | MEMNET).models == ["spatial_rnn.denoise"]


def test_noise_falls_back_to_the_other_denoiser() -> None:
    assert plan(measured(noise=50.0), available={"spatial_rnn.denoise"}).models == ["spatial_rnn.denoise"]
    p = plan(measured(noise=50.0), available=set())
    assert p.unchanged and "restorekit download" in p.reason


def test_jpeg_with_and_without_a_deblocker() -> None:
    assert plan(measured(jpeg=10), available=BUNDLED | MEMNET).models == ["memnet.jpeg_q10"]
    assert plan(measured(jpeg=22), available=BUNDLED | MEMNET).models == ["memnet.jpeg_q20"]
    high = plan(measured(jpeg=75), available=BUNDLED | MEMNET)
    assert high.unchanged and "quality 75" in high.reason
    # without MemNet's files (the real, empty test cache): no deblocker, said so; the blind denoiser up to q 30
    assert not MEMNET & available_models()
    p = plan(measured(jpeg=10))
    assert p.models == ["spatial_rnn.denoise"]
    assert "no JPEG deblocker" in p.reason and "restorekit download memnet.jpeg_q10" in p.reason
    assert plan(measured(jpeg=30)).models == ["spatial_rnn.denoise"]
    p = plan(measured(jpeg=40))
    assert p.unchanged and "quality 40 leaves mild artefacts" in p.reason
    p = plan(measured(jpeg=10), available={"dsrir.denoise"})
    assert p.unchanged and "restorekit download memnet.jpeg_q10" in p.reason
    # JPEG and noise without a deblocker: the same network for both, one pass
    p = plan(measured(jpeg=10, noise=20.0), available=BUNDLED)
    assert p.models == ["spatial_rnn.denoise"] and p.steps[0].kinds == ("jpeg", "noise")


def test_jpeg_then_noise_chain_order() -> None:
    p = plan(measured(noise=30.0, jpeg=20), available=BUNDLED | MEMNET)
    assert p.models == ["memnet.jpeg_q20", "memnet.denoise_s30"]
    p = plan(measured(noise=20.0, jpeg=20), available=BUNDLED | {"memnet.jpeg_q20"})
    assert p.models == ["memnet.jpeg_q20", "spatial_rnn.denoise"]


def test_noise_under_jpeg_takes_the_spatial_rnn() -> None:
    # Noise read from a JPEG's coefficients: the spatial RNN, not DSRIR (6-10 dB worse on JPEG files) nor the
    # MemNet records (trained for Gaussian noise of their sigma, which the compressed pixels no longer show).
    for sigma in (20.0, 60.0):
        a = measured(noise=sigma, jpeg=30)
        noise = Finding("noise", True, sigma, 0.9, "JPEG coefficients", {"visible_sigma": 1.2})
        a = Analysis((a.findings[0], noise, *a.findings[2:]), a.size, a.channels, a.source)
        p = plan(a, available=BUNDLED | MEMNET)
        assert p.models == ["memnet.jpeg_q20", "spatial_rnn.denoise"], p
        assert "under JPEG compression" in p.steps[1].reason
        assert plan(a, available=BUNDLED).models == ["spatial_rnn.denoise"]
        assert plan(a, available={"dsrir.denoise"}).models == []


def test_rain_and_haze() -> None:
    assert plan(measured(rain=True), available=BUNDLED).models == ["dsrir.derain"]
    # haze is acted on only when asked for: the score also marks clear photos of bright scenes
    unasked = plan(measured(haze=True), available=BUNDLED)
    assert unasked.unchanged and "task='dehaze'" in unasked.reason
    assert plan(measured(haze=True), available=BUNDLED, task="dehaze").models == ["dsrir.dehaze"]
    # rain has no detector (unknown): it acts only when task="derain" asks for it
    assert plan(measured(rain=None), available=BUNDLED).unchanged
    asked = plan(measured(rain=None), available=BUNDLED, task="derain")
    assert asked.models == ["dsrir.derain"] and "task=derain asks for it" in asked.steps[0].reason
    # one network for noise and rain: one pass
    both = plan(measured(noise=60.0, rain=True), available=BUNDLED)
    assert both.models == ["dsrir.denoise"] and both.steps[0].kinds == ("noise", "rain")


def test_task_narrows() -> None:
    a = measured(noise=25.0, jpeg=20, rain=True)
    p = plan(a, available=BUNDLED | MEMNET, task="denoise")
    assert p.models == ["spatial_rnn.denoise"]
    assert any("task=denoise" in n for n in p.notes)
    assert plan(a, available=BUNDLED | MEMNET, task="jpeg").models == ["memnet.jpeg_q20"]
    assert plan(measured(), available=BUNDLED, task="denoise").unchanged
    with pytest.raises(InputError, match="restorekit download memnet.jpeg_q10"):
        plan(a, available=BUNDLED, task="jpeg")
    with pytest.raises(InputError, match="task="):
        plan(a, available=BUNDLED, task="sr")
    with pytest.raises(InputError, match="restorekit download memnet.jpeg_q10"):
        Restorer("auto", task="jpeg")


def test_unknowns_do_not_act() -> None:
    p = plan(measured(noise=None, noise_present=None, rain=None), available=BUNDLED | MEMNET)
    assert p.unchanged
    assert any("could not be measured" in n for n in p.notes)


def test_clean_array_bit_identical_and_logged(caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    # a smooth gradient: no noise, no blocks
    g = np.tile(np.linspace(30, 220, 64)[None, :, None], (64, 1, 3)).round().astype(np.uint8)
    r = Restorer("auto", progress=False)
    with caplog.at_level(logging.INFO, logger="restorekit"):
        y = r.run(g)
    assert r.plan.unchanged, r.plan.explain()
    assert y.dtype == g.dtype and np.array_equal(y, g) and y is not g
    assert any("auto:" in rec.getMessage() for rec in caplog.records)
    f = g.astype(np.float32) / 255
    assert np.array_equal(r.run(f), f)
    t = torch.from_numpy(f).permute(2, 0, 1).contiguous()
    assert torch.equal(r.run(t), t)
    # a clean file: a faithful copy
    src = tmp_path / "g.png"
    Image.fromarray(g).save(src)
    out = r.run(src, tmp_path / "out.png")
    assert out.read_bytes() == src.read_bytes()
    assert len(r.run([g, g])) == 2 and len(r.plans) == 2
    with pytest.raises(InputError, match="mask"):
        r.run(g, mask=g[..., 0])


def _noisy_crop(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    folder = shared_data.require("denoise", "CBSD68")
    truth = np.asarray(Image.open(sorted(folder.glob("*.png"))[0]).convert("RGB"))[:96, :96].astype(np.float32) / 255
    noise = np.random.default_rng(0).normal(0, sigma / 255, truth.shape).astype(np.float32)
    return truth, np.clip(truth + noise, 0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.slow
def test_end_to_end_seeded_noise_cbsd68() -> None:
    truth, noisy = _noisy_crop(25.0)
    r = Restorer("auto", progress=False, task="denoise")
    y = r.run(noisy)
    assert r.plan.models == ["spatial_rnn.denoise"], r.plan.explain()
    sigma = r.plan.analysis.noise_sigma
    assert sigma is not None and 10 < sigma < 40  # analyze's accuracy is tested in test_analyze.py
    assert _psnr(y, truth) > _psnr(noisy, truth) + 3


def test_cli_explain(cli, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    g = np.tile(np.linspace(30, 220, 48)[None, :, None], (48, 1, 3)).round().astype(np.uint8)
    Image.fromarray(g).save(folder / "clean.png")
    proc = cli("run", "auto", folder, "-o", tmp_path / "out", "--explain", check=0)
    assert "clean.png" in proc.stdout and "unchanged" in proc.stdout
    assert (tmp_path / "out" / "clean.png").read_bytes() == (folder / "clean.png").read_bytes()
    proc = cli("run", "identity", folder, "-o", tmp_path / "o2", "--explain")
    assert proc.returncode != 0 and "auto" in proc.stdout + proc.stderr


def test_cli_download_lets_auto_choose_weights_still_to_fetch(cli, tmp_path) -> None:
    from restorekit.methods import runner

    assert runner("auto", download=True).download and not runner("auto").download
    assert runner("auto", download=True).available >= MEMNET
    folder = tmp_path / "in"
    folder.mkdir()
    g = np.tile(np.linspace(30, 220, 48)[None, :, None], (48, 1, 3)).round().astype(np.uint8)
    Image.fromarray(g).save(folder / "clean.png")
    proc = cli("run", "auto", folder, "-o", tmp_path / "out", "--download", "--explain", check=0)
    assert "unchanged" in proc.stdout  # a clean image needs no model, so nothing is fetched
    proc = cli("run", "spatial_rnn.denoise", folder, "-o", tmp_path / "o2", "--download")
    assert proc.returncode != 0 and "--download is for the auto model" in proc.stderr
    proc = cli("run", "auto", folder, "-o", tmp_path / "o3", "--download", "--engine", "ray")
    assert proc.returncode != 0 and "--download" in proc.stderr
