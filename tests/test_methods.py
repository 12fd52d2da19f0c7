"""The catalogue of methods (restorekit.methods): every name through `restorekit run` and `restorekit eval`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import degrade, methods
from restorekit.cli import main
from restorekit.errors import InputError, UnknownModelError
from restorekit.evaluate import BASELINE_TASKS, BASELINES, evaluate
from restorekit.filters import l0_smooth
from restorekit.image import read_image
from restorekit.metrics import DENOISE, SR, psnr
from restorekit.resize import imresize


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    for i, (h, w) in enumerate([(20, 26), (18, 16)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / f"p{i}.png")
    Image.fromarray(((rng.random((20, 26)) > 0.4) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    return root


def _pixels(path):
    return read_image(path).color[None]


def test_the_catalogue_names_what_each_method_takes():
    assert methods.list_methods() == ["bicubic", "identity", "nearest", "l0smooth"]
    assert BASELINES == ("bicubic", "identity", "nearest")
    assert BASELINE_TASKS == {"bicubic": ("sr",), "identity": None, "nearest": ("inpaint",)}
    m = methods.METHODS
    assert [n for n in m if m[n].upscales] == ["bicubic"] and [n for n in m if m[n].needs_mask] == ["nearest"]
    assert set(m["l0smooth"].params) == {"lam", "kappa", "beta_max"} and not m["bicubic"].params
    assert methods.is_method("l0smooth:0.05") and not methods.is_method("msrn.sr_x4")
    # One call shape: restore(x (N, C, H, W), mask or None) -> tensor.
    x, mask = torch.rand(2, 3, 8, 10), (torch.rand(1, 1, 8, 10) > 0.5).float()
    for name, kw in (("bicubic", {"scale": 2}), ("identity", {}), ("nearest", {"condition": "mask"}), ("l0smooth", {})):
        bound = methods.bind(name, **kw)
        y = bound.restore(x, mask if bound.condition else None)
        assert y.shape == (2, 3, 8 * bound.scale, 10 * bound.scale), name


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["bicubic", "--scale", "2"], lambda x, m: imresize(x, 2, quantize=True).clamp(0, 1)),
        (["identity"], lambda x, m: x),
        (["nearest", "--mask", "MASK"], lambda x, m: methods.nearest_fill(x, m)),
        (["l0smooth:0.05"], lambda x, m: l0_smooth(x, 0.05).clamp(0, 1)),
        (["l0smooth", "--lam", "0.05"], lambda x, m: l0_smooth(x, 0.05).clamp(0, 1)),
    ],
    ids=["bicubic", "identity", "nearest", "l0smooth:0.05", "l0smooth--lam"],
)
def test_run_applies_every_method_to_files(photos, tmp_path, capsys, argv, expect):
    mask_file = tmp_path / "mask.png"
    single = "--mask" in argv  # one mask file: one input
    inputs = [str(photos / "p0.png")] if single else [str(photos)]
    argv = [str(mask_file) if a == "MASK" else a for a in argv]
    out = tmp_path / "out"
    assert main(["run", argv[0], *inputs, "-o", str(out), *argv[1:], "--no-progress"]) == 0, capsys.readouterr().err
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == (["p0.png"] if single else ["p0.png", "p1.png"])
    mask = _pixels(mask_file)[:, :1] if single else None
    for path in written:
        y = _pixels(path)
        want = (expect(_pixels(photos / path.name), mask) * 255).round() / 255
        assert y.shape == want.shape and torch.allclose(y, want, atol=1.01 / 255), path.name


def test_run_and_eval_refuse_what_a_method_cannot_use(photos, tmp_path, capsys):
    def err(*argv):
        assert main([*argv, "--no-progress"]) == 1
        return capsys.readouterr().err

    o = str(tmp_path / "o")
    assert "give --scale 2, 3, 4" in err("run", "bicubic", str(photos), "-o", o)
    assert "baseline (no network): --weights does not apply" in err(
        "run", "identity", str(photos), "-o", o, "--weights", "w"
    )
    assert "--scale does not apply" in err("run", "nearest", str(photos), "-o", o, "--scale", "2")
    assert "needs a mask" in err("run", "nearest", str(photos), "-o", o)
    assert "takes no mask" in err(
        "run", "identity", str(photos / "p0.png"), "-o", o, "--mask", str(tmp_path / "mask.png")
    )
    assert "--lam is a parameter of the l0smooth filter, not of bicubic" in err(
        "run", "bicubic", str(photos), "-o", o, "--scale", "2", "--lam", "0.1"
    )
    assert "takes no parameters" in err("run", "bicubic:4", str(photos), "-o", o)
    assert "takes no mask" in err("eval", "l0smooth", "--data", str(photos), "--degrade", "mask:0.5")
    assert "has no scale" in err("eval", "l0smooth", "--data", str(photos), "--scale", "2")


@pytest.mark.parametrize("verb", ["run", "eval"])
def test_unknown_names_suggest_models_and_methods(photos, tmp_path, capsys, verb):
    args = (
        [str(photos), "-o", str(tmp_path / "o")] if verb == "run" else ["--data", str(photos), "--degrade", "noise:5"]
    )
    assert main([verb, "bicubc", *args, "--no-progress"]) == 1
    msg = capsys.readouterr().err
    assert "Unknown model 'bicubc'" in msg and "Did you mean the method 'bicubic'?" in msg and "restorekit list" in msg
    assert main([verb, "l0smoth", *args, "--no-progress"]) == 1
    assert "the method 'l0smooth'" in capsys.readouterr().err
    with pytest.raises(UnknownModelError, match=r"Did you mean 'msrn'.*Methods without weights \(run, eval\): bicubic"):
        methods.runner("msrnn")


def test_eval_measures_every_method_with_the_function_run_applies(photos, tmp_path, capsys):
    # identity and l0smooth on noise, nearest and identity on masks, bicubic on x2 LR: each per-image score is the
    # metric of the catalogue's function on the same seeded input.
    from restorekit.evaluate import _image_seed

    for spec, deg in (("identity", "noise:25"), ("l0smooth:0.05", "noise:25"), ("nearest", "mask:0.5")):
        res = evaluate(spec, photos, degradation=deg, seed=3, progress=False)
        d = degrade.parse(deg)
        bound = methods.bind(spec, condition=d.condition)
        assert res.model == bound.label and res.convention == DENOISE
        for row in res.images:
            clean = _pixels(photos / row.name)
            if d.condition:
                x, mask = d.with_mask(clean, seed=_image_seed(3, row.name))
            else:
                x, mask = d(clean, seed=_image_seed(3, row.name)), None
            assert row.psnr == pytest.approx(float(psnr(bound.restore(x, mask), clean, DENOISE)[0]), abs=1e-5)
    res = evaluate("bicubic", photos, scale=2, progress=False)
    for row in res.images:
        hr = _pixels(photos / row.name)
        lr = degrade.bicubic_downsample(hr, 2)
        up = methods.bind("bicubic", scale=2).restore(lr, None)
        assert row.psnr == pytest.approx(float(psnr(up, hr, SR(2))[0]), abs=1e-5)
    # The CLI's eval of a method: the same numbers.
    out = tmp_path / "r.json"
    argv = ["eval", "l0smooth:0.05", "--data", str(photos), "--degrade", "noise:25", "--seed", "3", "--json", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    want = evaluate("l0smooth:0.05", photos, degradation="noise:25", seed=3, progress=False)
    assert json.loads(out.read_text())["mean"]["psnr"] == pytest.approx(want.psnr)
    assert "l0smooth (lambda 0.05)" in capsys.readouterr().out


def test_bind_says_what_a_method_needs():
    with pytest.raises(InputError, match="give --scale 2, 3, 4"):
        methods.bind("bicubic")
    with pytest.raises(InputError, match="nearest baseline fills missing pixels.*mask:0.5"):
        methods.bind("nearest")
    with pytest.raises(InputError, match="identity baseline returns its input, so it has no scale"):
        methods.bind("identity", scale=2)
    with pytest.raises(InputError, match="makes a inpaint benchmark, not sr"):
        methods.bind("identity", task="sr", condition="mask", context="mask:0.5")


@pytest.mark.parametrize("spec", ["bicubic", "identity", "nearest", "l0smooth"])
def test_every_method_is_what_run_batch_drives(spec):
    from restorekit.batch import ImageToImage

    runner = methods.runner(spec, scale=2 if spec == "bicubic" else None)
    assert isinstance(runner, ImageToImage)
    assert runner.condition == ("mask" if spec == "nearest" else None)
