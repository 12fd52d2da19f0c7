"""The evaluation runner and `restorekit eval`: folder layouts, baselines, tiny models, outputs, errors."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import degrade
from restorekit.errors import InputError, WeightsNotAvailableError
from restorekit.evaluate import evaluate, find_pairs
from restorekit.image import read_image
from restorekit.metrics import DENOISE, SR, psnr, ssim
from restorekit.registry import get_arch
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
def clean(image_folder):
    """Four smooth-ish 8-bit images of odd sizes: three colour, one grey."""
    sizes = [(50, 61), (45, 40), (64, 64), (39, 52)]
    return image_folder("clean", 4, sizes, kind="smooth", grey=[3], names=[f"im{i}.png" for i in range(4)])


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


def test_input_target_layout_json_csv_and_metrics(tmp_path, paired_folders):
    paired_folders("d", size=(32, 40), seed=1, clean="target", degraded="input", noise=3, names=["a.png"])
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


@pytest.fixture
def eval_cli(cli):
    """``restorekit eval ARGS`` in this process."""
    return lambda *args: cli("eval", *args)


def test_cli_eval_baseline_and_own_weights(clean, tmp_path, eval_cli, tiny_config, tiny_model):
    proc = eval_cli("bicubic", "--data", clean, "--scale", "2", "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "mean" in proc.stdout and "convention y_shave_scale" in proc.stdout and "im3.png" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["mean"]["images"] == 4
    tiny = {**get_arch("msrn").default_config, **tiny_config("msrn", scale=2)}
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, tiny_model("msrn", scale=2).state_dict(), arch="msrn", config=tiny, name="msrn.sr_x2")
    proc = eval_cli("msrn.sr_x2", "--data", clean, "--weights", weights, "--device", "cpu", "--csv", tmp_path / "r.csv")
    assert proc.returncode == 0, proc.stderr
    assert f"msrn.sr_x2 ({weights})" in proc.stdout and (tmp_path / "r.csv").is_file()
    bad = eval_cli("identity", "--data", clean, "--no-progress")
    assert bad.returncode == 1 and "--degrade" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_eval_reproduces_the_set5_x4_bicubic_figure():
    shared_data.require("sr", "Set5", "x4")
    want_p, want_s = shared_data.published_bicubic()[("Set5", 4)]
    with shared_data.one_thread():
        res = evaluate("bicubic", shared_data.DATA / "sr" / "Set5", scale=4, progress=False)
    assert res.layout == "x4/HR + x4/LR" and len(res.images) == 5
    assert abs(res.psnr - want_p) < 0.05 and abs(res.ssim - want_s) < 0.002, (res.psnr, res.ssim)


# ------------------------------------------------------------------------------- masked tasks


def _nearest_reference(known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: for every pixel, the known pixel first by (distance^2, |dx|, dx, dy) (nearest_fill's tie rule)."""
    h, w = known.shape
    ky, kx = np.nonzero(known)
    rows, cols = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            dy, dx = ky - y, kx - x
            order = np.lexsort((dy, dx, np.abs(dx), dx * dx + dy * dy))  # last key sorts first
            rows[y, x], cols[y, x] = ky[order[0]], kx[order[0]]
    return rows, cols


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = [rng.random((h, w)) >= ratio for h, w, ratio in [(13, 17, 0.5), (9, 20, 0.9), (21, 8, 0.97), (16, 16, 0.2)]]
    hole = rng.random((40, 50)) >= 0.3
    hole[5:35, 8:45] = False  # a big rectangular hole
    yy, xx = np.mgrid[:40, :50]
    disk = (yy - 20) ** 2 + (xx - 25) ** 2 > 17**2  # a big round hole (many exact ties on its centre)
    single = np.zeros((11, 14), bool)
    single[7, 2] = True
    lattice = np.zeros((15, 15), bool)
    lattice[::4, ::4] = True  # equidistant known pixels everywhere: the tie rule decides
    out += [hole, disk, single, lattice, np.ones((5, 6), bool)]
    return out


@pytest.mark.parametrize("case", range(9))
def test_nearest_fill_is_the_exact_nearest_known_pixel(case):
    from restorekit.evaluate import nearest_fill

    known = _masks()[case]
    h, w = known.shape
    x = torch.arange(2 * h * w, dtype=torch.float64).view(1, 2, h, w)  # every pixel's value names it
    y = nearest_fill(x, torch.from_numpy(known).double()[None, None])
    rows, cols = _nearest_reference(known)
    assert np.array_equal(y[0, 0].long().numpy(), rows * w + cols)
    assert torch.equal(y[0, 1] - y[0, 0], torch.full((h, w), float(h * w), dtype=torch.float64))
    assert torch.equal(y[0, :, known], x[0, :, known]), "known pixels are kept"


def test_nearest_fill_batches_and_corner_cases():
    from restorekit.evaluate import nearest_fill

    x = torch.rand(3, 3, 10, 12)
    masks = torch.from_numpy(np.stack([_masks()[i][:10, :12] for i in (0, 3, 4)])).float()[:, None]
    batch = nearest_fill(x, masks)
    for i in range(3):
        assert torch.equal(batch[i : i + 1], nearest_fill(x[i : i + 1], masks[i : i + 1]))
    assert torch.equal(nearest_fill(x, torch.zeros(1, 1, 10, 12)), torch.full_like(x, 0.5)), "nothing to copy"
    with pytest.raises(InputError, match="same size"):
        nearest_fill(x, masks[..., :-1])


@pytest.fixture
def inpaint_tiny(tiny_config):
    """spatial_rnn.inpaint and .colorize with tiny configs, registered for the test (random weights)."""
    import dataclasses

    from restorekit import registry

    recs = []
    for name in ("spatial_rnn.inpaint", "spatial_rnn.colorize"):
        rec = registry.get_record(name)
        tiny = {**rec.config, **tiny_config(rec.arch)}
        recs.append(dataclasses.replace(rec, tag=rec.tag + "_tiny", default=False, config=tiny))
    with registry.temporary(None, *recs):
        yield recs[0].name, recs[1].name


def test_masked_eval_is_seeded_and_model_and_baselines_see_the_same_masks(clean, inpaint_tiny, monkeypatch):
    from restorekit import evaluate as ev
    from restorekit import methods  # the nearest baseline's home (the catalogue)
    from restorekit.restorer import Restorer

    seen = {"model": [], "nearest": []}
    real_fill, real_restore = methods.nearest_fill, Restorer.restore_planar

    def spy_fill(x, mask):
        seen["nearest"].append(mask.clone())
        return real_fill(x, mask)

    def spy_restore(self, planar, mask=None):
        seen["model"].append(mask.clone())
        return real_restore(self, planar, mask)

    monkeypatch.setattr(methods, "nearest_fill", spy_fill)
    monkeypatch.setattr(Restorer, "restore_planar", spy_restore)
    near = evaluate("nearest", clean, degradation="mask:0.5", seed=1, progress=False)
    model = evaluate(inpaint_tiny[0], clean, degradation="mask:0.5", seed=1, pretrained=False, progress=False)
    assert len(seen["model"]) == len(seen["nearest"]) == 4
    for name, a, b in zip([r.name for r in near.images], seen["nearest"], seen["model"]):
        assert torch.equal(a, b), f"{name}: the model and the baseline got different masks"
        target = read_image(clean / name).color[None]
        want = degrade.parse("mask:0.5").with_mask(target, seed=ev._image_seed(1, name))[1]
        assert torch.equal(a, want) and 0.4 < float(1 - a.mean()) < 0.6
    assert near.degradation == model.degradation == "mask:0.5" and near.convention == model.convention == DENOISE
    assert all(math.isfinite(r.psnr) for r in model.images) and model.model == inpaint_tiny[0]
    # the same seed gives the same scores, another seed other masks
    again = evaluate("nearest", clean, degradation="mask:0.5", seed=1, progress=False)
    other = evaluate("nearest", clean, degradation="mask:0.5", seed=2, progress=False)
    assert again.images == near.images and other.images != near.images
    ident = evaluate("identity", clean, degradation="mask:0.5", seed=1, progress=False)
    assert ident.images == evaluate("identity", clean, degradation="mask", seed=1, progress=False).images
    assert near.psnr > ident.psnr + 5  # random fixtures average ~0.5: mid-grey holes are not far off
    # identity with mask: is the input as the network sees it, holes at mid-grey
    name = ident.images[0].name
    target = read_image(clean / name).color[None]
    x, mask = degrade.parse("mask:0.5").with_mask(target, seed=ev._image_seed(1, name))
    assert ident.images[0].psnr == pytest.approx(psnr(x + 0.5 * (1 - mask), target, DENOISE).item(), abs=1e-6)


def test_hints_identity_is_the_grey_image_with_the_known_colours(clean, inpaint_tiny):
    from restorekit.evaluate import _image_seed

    (clean / "im3.png").unlink()  # the grey one
    res = evaluate("identity", clean, degradation="hints:0.03", progress=False)
    assert res.degradation == "hints:0.03" and len(res.images) == 3
    for row in res.images:
        target = read_image(clean / row.name).color[None]
        grey, _, mask = degrade.color_hints(target, ratio=0.03, seed=_image_seed(0, row.name))
        want = grey.expand(-1, 3, -1, -1) * (1 - mask) + target * mask
        assert row.psnr == pytest.approx(psnr(want, target, DENOISE).item(), abs=1e-6)
    col = evaluate(inpaint_tiny[1], clean, degradation="hints:0.03", pretrained=False, progress=False)
    assert all(math.isfinite(r.psnr) for r in col.images) and col.degradation == "hints:0.03"


def test_masked_eval_errors_say_what_to_do(clean, inpaint_tiny, tmp_path):
    inpaint, colorize = inpaint_tiny
    with pytest.raises(InputError, match="nearest baseline fills missing pixels.*not noise:sigma=25"):
        evaluate("nearest", clean, degradation="noise:25", progress=False)
    with pytest.raises(InputError, match="nearest baseline.*mask:0.5"):
        evaluate("nearest", clean, degradation="hints:0.03", progress=False)
    with pytest.raises(InputError, match="takes a mask of missing pixels.*--degrade mask:0.5.*not noise"):
        evaluate(inpaint, clean, degradation="noise:25", pretrained=False, progress=False)
    with pytest.raises(InputError, match="--degrade mask:0.5"):
        evaluate(inpaint, clean, pretrained=False, progress=False)
    with pytest.raises(InputError, match="takes colour hints.*hints:0.03.*not mask:0.5"):
        evaluate(colorize, clean, degradation="mask:0.5", pretrained=False, progress=False)
    with pytest.raises(InputError, match="takes no mask"):
        evaluate("greynet.denoise", clean, degradation="mask:0.5", pretrained=False, progress=False)
    with pytest.raises(InputError, match="takes no mask"):
        evaluate("bicubic", clean, scale=2, degradation="mask:0.5", progress=False)
    with pytest.raises(InputError, match="im3.png is a grey image"):
        evaluate("identity", clean, degradation="hints", progress=False)
    _save(tmp_path / "p" / "HR", "a.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "p" / "LR", "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="--degrade applies only"):
        evaluate("nearest", tmp_path / "p", degradation="mask:0.5", progress=False)


def test_cli_eval_masked_model_and_baseline(clean, tmp_path, eval_cli, tiny_config):
    spec = get_arch("spatial_rnn")
    config = {**spec.default_config, **tiny_config("spatial_rnn", condition="mask")}
    torch.manual_seed(0)
    weights = tmp_path / "inpaint.safetensors"
    save_weights(weights, spec.build(**config).state_dict(), arch="spatial_rnn", config=config)
    out = tmp_path / "r.json"
    args = ["--data", clean, "--degrade", "mask:0.5", "--device", "cpu", "--no-progress", "--json", out]
    proc = eval_cli("spatial_rnn.inpaint", "--weights", weights, *args)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["degradation"] == "mask:0.5" and data["mean"]["images"] == 4 and math.isfinite(data["mean"]["psnr"])
    assert data["model"] == f"spatial_rnn.inpaint ({weights})" and data["convention"]["name"] == "full_image"
    refused = eval_cli("nearest", *args)  # the results file exists: never replaced unasked
    assert refused.returncode == 1 and "already exists; pass --overwrite" in refused.stderr
    assert json.loads(out.read_text()) == data
    proc = eval_cli("nearest", *args, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["mean"]["psnr"] > data["mean"]["psnr"]
    bad = eval_cli("nearest", "--data", clean, "--degrade", "jpeg:10", "--no-progress")
    assert bad.returncode == 1 and "mask:RATIO" in bad.stderr and "Traceback" not in bad.stderr


def _first_cbsd68(tmp_path, n=3):
    import shutil

    src = shared_data.require("denoise", "CBSD68")
    dst = tmp_path / "cbsd"
    dst.mkdir()
    for path in sorted(p for p in src.iterdir() if p.suffix == ".png")[:n]:
        shutil.copy(path, dst / path.name)
    return dst


def test_cbsd68_nearest_beats_identity_and_hints_identity_is_reasonable(tmp_path):
    data = _first_cbsd68(tmp_path)
    with shared_data.one_thread():
        near = evaluate("nearest", data, degradation="mask:0.5", progress=False)
        ident = evaluate("identity", data, degradation="mask:0.5", progress=False)
        hints = evaluate("identity", data, degradation="hints:0.03", progress=False)
    assert len(near.images) == len(ident.images) == len(hints.images) == 3
    # missing pixels at mid-grey are far off (~9 dB); copying a neighbour at 50 % missing is ~25-30 dB
    assert near.psnr > ident.psnr + 10 and near.psnr > 22, (near.psnr, ident.psnr)
    assert near.ssim > ident.ssim + 0.3, (near.ssim, ident.ssim)
    # grey plus 3 % true colours (~21 dB): the luma is exact, only the chroma is missing, so SSIM stays high
    assert all(math.isfinite(r.psnr) for r in hints.images) and 15 < hints.psnr < 35, hints.psnr
    assert hints.ssim > 0.8 and hints.ssim > near.ssim - 0.2, hints.ssim
