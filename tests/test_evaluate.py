"""The evaluation runner and `restorekit eval`: folder layouts, baselines, tiny models, outputs, errors."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import degrade
from restorekit.archs.msrn import MSRN
from restorekit.errors import InputError, WeightsNotAvailableError
from restorekit.evaluate import evaluate, find_pairs
from restorekit.image import read_image
from restorekit.metrics import DENOISE, SR, psnr, ssim
from restorekit.resize import imresize
from restorekit.weights import save_weights

from . import nets, shared_data


@pytest.fixture(scope="module", autouse=True)
def _test_nets():
    with nets.registered():
        yield


def _save(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / name)


@pytest.fixture
def clean(tmp_path):
    """Four smooth-ish 8-bit images of odd sizes: three colour, one grey."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 61), (45, 40), (64, 64), (39, 52)]):
        base = rng.random((h // 4 + 2, w // 4 + 2, 3))
        up = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))
        _save(tmp_path / "clean", f"im{i}.png", up[:, :, 0] if i == 3 else up)
    return tmp_path / "clean"


def test_clean_sr_folder_equals_the_paired_folder_made_from_it(clean, tmp_path):
    res = evaluate("bicubic", clean, scale=2, progress=False)
    assert res.layout == "clean images" and res.degradation == "bicubic:scale=2" and len(res.images) == 4
    # Write the same LR files as a paired x2/HR + x2/LR benchmark: identical per-image scores.
    for path in sorted(clean.glob("*.png")):
        hr = read_image(path).color[None]
        hr = hr[..., : hr.shape[-2] // 2 * 2, : hr.shape[-1] // 2 * 2]
        lr = degrade.bicubic_downsample(hr, 2)
        for sub, t in (("HR", hr), ("LR", lr)):
            arr = (t[0] * 255).round().byte().permute(1, 2, 0).numpy()
            _save(tmp_path / "bench" / "x2" / sub, path.name, arr[:, :, 0] if arr.shape[2] == 1 else arr)
        # The score itself is the metric of the MATLAB bicubic upsampling.
        row = next(r for r in res.images if r.name == path.name)
        up = imresize(lr, 2, quantize=True).clamp(0, 1)
        assert row.psnr == pytest.approx(psnr(up, hr, SR(2)).item(), abs=1e-4)
        assert row.ssim == pytest.approx(ssim(up, hr, SR(2)).item(), abs=1e-6)
    paired = evaluate("bicubic", tmp_path / "bench", scale=2, progress=False)
    assert paired.layout == "x2/HR + x2/LR" and paired.degradation is None
    assert [(r.name, round(r.psnr, 4), round(r.ssim, 5)) for r in paired.images] == [
        (r.name, round(r.psnr, 4), round(r.ssim, 5)) for r in res.images
    ]
    assert res.convention == SR(2) and "y_shave_scale" in res.table()


def test_identity_noise_is_seeded_per_file(clean):
    a = evaluate("identity", clean, degradation="noise:25", seed=1, progress=False)
    b = evaluate("identity", clean, degradation="noise:25", seed=1, progress=False)
    c = evaluate("identity", clean, degradation="noise:25", seed=2, progress=False)
    assert a.images == b.images and a.images != c.images and a.convention == DENOISE
    assert a.psnr == pytest.approx(20 * math.log10(255 / 25), abs=0.1)
    # The seed of an image depends on its file name, not on which other files are there.
    (clean / "im0.png").unlink()
    d = evaluate("identity", clean, degradation="noise:25", seed=1, progress=False)
    assert d.images == a.images[1:]


def test_input_target_layout_json_csv_and_metrics(tmp_path):
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noisy = np.clip(target.astype(int) + rng.integers(-3, 4, target.shape), 0, 255).astype(np.uint8)
    _save(tmp_path / "d" / "target", "a.png", target)
    _save(tmp_path / "d" / "input", "a.png", noisy)
    res = evaluate("identity", tmp_path / "d", convention="y_full", progress=False)
    assert res.layout == "target + input" and res.convention.name == "y_full"
    data = json.loads(res.write_json(tmp_path / "out" / "r.json").read_text())
    assert data["mean"]["psnr"] == pytest.approx(res.psnr) and data["convention"]["name"] == "y_full"
    assert data["images"][0]["name"] == "a.png"
    rows = list(csv.reader(res.write_csv(tmp_path / "out" / "r.csv").read_text().splitlines()))
    assert rows[0] == ["image", "psnr_y_full", "ssim_y_full"] and rows[-1][0] == "mean" and len(rows) == 3
    p, s = res.as_metrics("toy")
    assert (p.metric, p.convention, p.source, s.metric) == ("psnr", "y_full", "measured", "ssim")


def test_tiny_random_models_run_on_every_layout(clean):
    grey = evaluate("greynet.denoise", clean, degradation="noise:15", pretrained=False, device="cpu", progress=False)
    assert len(grey.images) == 4 and all(math.isfinite(r.psnr) for r in grey.images)
    sr = evaluate("greynet.sr_x2", clean, pretrained=False, device="cpu", progress=False)
    assert sr.degradation == "bicubic:scale=2" and sr.convention.crop == 2
    pre = evaluate("greynet", clean, task="sr", scale=3, progress=False, pretrained=False, device="cpu")
    assert pre.model == "greynet.sr_x3_pre" and pre.convention == SR(3)


def test_errors_say_what_to_do(clean, tmp_path):
    with pytest.raises(WeightsNotAvailableError, match="--weights PATH"):
        evaluate("greynet.denoise", clean, degradation="noise:25", progress=False)
    with pytest.raises(InputError, match="--degrade"):
        evaluate("identity", clean, progress=False)
    with pytest.raises(InputError, match="--scale"):
        evaluate("bicubic", clean, progress=False)
    with pytest.raises(InputError, match="contradicts"):
        evaluate("bicubic", clean, scale=3, degradation="bicubic:2", progress=False)
    _save(tmp_path / "p" / "HR", "a.png", np.zeros((8, 8), np.uint8))
    _save(tmp_path / "p" / "LR", "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="unpaired: a.png, b.png"):
        find_pairs(tmp_path / "p")
    (tmp_path / "p" / "LR" / "b.png").rename(tmp_path / "p" / "LR" / "a.png")
    with pytest.raises(InputError, match="--degrade applies only"):
        evaluate("bicubic", tmp_path / "p", scale=2, degradation="bicubic:2", progress=False)
    with pytest.raises(InputError, match="does not match"):
        evaluate("bicubic", tmp_path / "p", scale=3, progress=False)
    (tmp_path / "empty" / "x2").mkdir(parents=True)
    with pytest.raises(InputError, match="pass --scale"):
        evaluate("identity", tmp_path / "empty", degradation="noise:5", progress=False)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "restorekit", "eval", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_eval_baseline_and_own_weights(clean, tmp_path):
    proc = _cli("bicubic", "--data", clean, "--scale", "2", "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "mean" in proc.stdout and "convention y_shave_scale" in proc.stdout and "im3.png" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["mean"]["images"] == 4
    tiny = {"scale": 2, "n_feats": 4, "n_blocks": 2, "n_colors": 3, "rgb_range": 255.0}
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, MSRN(**tiny).state_dict(), arch="msrn", config=tiny, name="msrn.sr_x2")
    proc = _cli("msrn.sr_x2", "--data", clean, "--weights", weights, "--device", "cpu", "--csv", tmp_path / "r.csv")
    assert proc.returncode == 0, proc.stderr
    assert f"msrn.sr_x2 ({weights})" in proc.stdout and (tmp_path / "r.csv").is_file()
    bad = _cli("identity", "--data", clean, "--no-progress")
    assert bad.returncode == 1 and "--degrade" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_eval_reproduces_the_set5_x4_bicubic_figure():
    shared_data.require("sr", "Set5", "x4")
    want_p, want_s = shared_data.published_bicubic()[("Set5", 4)]
    with shared_data.one_thread():
        res = evaluate("bicubic", shared_data.DATA / "sr" / "Set5", scale=4, progress=False)
    assert res.layout == "x4/HR + x4/LR" and len(res.images) == 5
    assert abs(res.psnr - want_p) < 0.05 and abs(res.ssim - want_s) < 0.002, (res.psnr, res.ssim)
