"""restorekit-train: config precedence, data pipeline, per-architecture steps, exact resume, the CLI."""

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.errors import InputError, RestorekitError
from restorekit.registry import get_arch, get_record, list_archs, list_models
from restorekit.train import CHECKPOINT_FORMAT
from restorekit.train.config import PRESETS, TrainConfig, resolve
from restorekit.train.data import EpochSampler, TrainDataset, find_items
from restorekit.train.loop import Trainer, fit, lr_factor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(image_folder):
    # flat 8x8 blocks: smooth-ish content so denoising has something to learn
    return image_folder("clean", 4, (40, 48), kind="blocks")


def _tiny_cfg(name: str, data: Path, out: Path, **kw) -> TrainConfig:
    arch = get_record(name).arch
    values = dict(
        data=[str(data)],
        out=str(out),
        model_config=dict(get_arch(arch).tiny_config),
        patch_size=8 if arch == "msrn" else 16,
        batch_size=2,
        steps=4,
        workers=0,
        log_interval=1,
        checkpoint_interval=1000,
    )
    values.update(kw)
    return resolve(name, overrides=values)


# ------------------------------------------------------------------------------------------------ config


def test_every_registered_model_has_a_preset():
    assert set(PRESETS) == set(list_models())
    for name in list_models():
        p = PRESETS[name]
        assert p["model"] == name and p["loss"] and p["optimizer"] and p["patch_size"] > 0
    assert PRESETS["msrn.sr_x4"]["degradations"] == ["bicubic:4"]
    assert PRESETS["msrn.sr_x4"]["patch_size"] == 48 and PRESETS["msrn.sr_x4"]["loss"] == "l1"
    mem = PRESETS["memnet.denoise_s50"]
    assert (mem["optimizer"], mem["lr"], mem["grad_clip_mode"], mem["patch_size"]) == ("sgd", 0.1, "adjustable", 31)
    assert mem["degradations"] == ["noise:50"]
    rnn = PRESETS["spatial_rnn.denoise"]
    assert (rnn["schedule"], rnn["power"], rnn["grad_clip"], rnn["batch_size"]) == ("poly", 2.0, 50.0, 20)
    assert PRESETS["spatial_rnn.inpaint"]["degradations"] == ["mask:0.5"]


def test_config_precedence_preset_then_file_then_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('model = "spatial_rnn.denoise"\nlr = 0.01\nbatch_size = 7\n[loss_args]\n')
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"model": "spatial_rnn.denoise", "lr": 0.01, "batch_size": 7}))
    for path in ([toml] if sys.version_info >= (3, 11) else []) + [js]:
        cfg = resolve(file=path, overrides={"batch_size": 3, "steps": None})
        assert cfg.lr == 0.01  # file over preset (1e-4)
        assert cfg.batch_size == 3  # flag over file
        assert cfg.steps == 20_000 and cfg.patch_size == 64  # preset where nobody says otherwise
    with pytest.raises(InputError, match="unknown training option"):
        resolve("msrn.sr_x4", overrides={"learning_rate": 1})
    with pytest.raises(InputError, match="optimizer"):
        resolve("msrn.sr_x4", overrides={"optimizer": "lion"})
    with pytest.raises(InputError, match="which model"):
        resolve()


def test_lr_schedules_by_hand():
    c = TrainConfig(lr=1.0, steps=100, schedule="cosine", warmup_steps=10, min_lr=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0) and lr_factor(100, c) == pytest.approx(0.1)
    assert lr_factor(55, c) == pytest.approx(0.1 + 0.9 * 0.5)
    c = TrainConfig(lr=1.0, steps=100, schedule="poly", power=2.0)
    assert lr_factor(50, c) == pytest.approx(0.25)
    c = TrainConfig(lr=1.0, steps=100, schedule="step", decay_steps=30, gamma=0.5)
    assert [lr_factor(s, c) for s in (0, 29, 30, 61)] == [1.0, 1.0, 0.5, 0.25]


# ------------------------------------------------------------------------------------------------ data


def test_bad_data_folders(tmp_path, image_folder):
    with pytest.raises(InputError, match="does not exist"):
        find_items([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        find_items([str(tmp_path / "empty")])
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"x{i}.png").write_bytes(b"\x89PNG not really")
    items, _ = find_items([str(bad)])
    with pytest.warns(UserWarning, match="cannot decode") as rec, pytest.raises(InputError, match="none could be"):
        TrainDataset(items, patch=8, degradations=["noise:25"])
    assert len(rec) == 2  # one warning per file
    image_folder(bad, 2, (40, 48), kind="blocks")
    items, _ = find_items([str(bad)])
    with pytest.warns(UserWarning, match="cannot decode") as rec:
        ds = TrainDataset(items, patch=8, degradations=["noise:25"])
    assert len(ds) == 2 and len(rec) == 2
    with pytest.raises(InputError, match="no degradation"):
        TrainDataset(items[2:], patch=8)


def _special_image(path: Path, kind: str) -> Path:
    """A 16x16 image of a kind Pillow's plain ``convert("RGB")`` gets wrong, or that channel adaptation must treat
    as the Restorer does."""
    rng = np.random.RandomState(7)
    if kind == "rgb16":  # Pillow alone truncates 16-bit colour to 8 bits
        from restorekit.png16 import encode_png16

        path.write_bytes(encode_png16(rng.randint(0, 65536, (16, 16, 3)).astype(np.uint16)))
        return path
    if kind == "grey16":  # Pillow's "I;16" -> RGB clips rather than scales
        Image.fromarray(rng.randint(0, 65536, (16, 16)).astype(np.uint16)).save(path)
        return path
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: upright is 90 degrees clockwise
    if kind == "rotated_jpeg":
        Image.fromarray(rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)).save(path, exif=exif, quality=95)
    elif kind == "rgba":
        Image.fromarray(rng.randint(0, 256, (16, 16, 4)).astype(np.uint8)).save(path)
    else:  # grey
        Image.fromarray(rng.randint(0, 256, (16, 16)).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "kind, in_channels, changed",
    [
        ("rgb16", 3, True),
        ("grey16", 3, True),
        ("rotated_jpeg", 3, True),
        ("rotated_jpeg", 1, True),
        ("grey", 1, True),
        ("rgba", 3, False),
        ("grey", 3, False),
    ],
)
def test_training_sees_the_pixels_evaluation_sees(tmp_path, kind, in_channels, changed):
    from restorekit.image import read_image, rgb_to_ycbcr
    from restorekit.train.data import Item

    path = _special_image(tmp_path / ("x.jpg" if kind.endswith("jpeg") else "x.png"), kind)
    color = read_image(path).color[None]  # what evaluation measures against
    # ... fed as the Restorer feeds a network of in_channels: Y of colour for grey ones, grey x 3 for colour ones
    if in_channels == 1:
        expected = color if color.shape[1] == 1 else rgb_to_ycbcr(color)[:, :1]
    else:
        expected = color.expand(-1, 3, -1, -1)
    ds = TrainDataset([Item(path, path)], patch=16, in_channels=in_channels, augment=False)  # the whole image
    inp, tgt = ds[(0, 0)]
    assert torch.equal(tgt, expected[0]) and torch.equal(inp, expected[0])
    clean = TrainDataset([Item(path)], patch=16, in_channels=in_channels, augment=False, degradations=["noise:25"])
    assert torch.equal(clean[(0, 0)][1], expected[0])
    # Training once decoded with Pillow's plain RGB conversion: these kinds it got wrong, the others right.
    with Image.open(path) as img:
        old = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    old = rgb_to_ycbcr(old)[:, :1] if in_channels == 1 else old
    assert torch.equal(old, expected) is not changed


def test_bad_data_fails_before_the_model_is_built(tmp_path):
    cfg = resolve("spatial_rnn.denoise", overrides={"data": [str(tmp_path / "missing")], "out": str(tmp_path / "o")})
    with pytest.raises(InputError, match="does not exist"):
        fit(cfg, progress=False)
    assert not (tmp_path / "o").exists()


def test_samples_are_seeded_by_epoch_and_index(images):
    items, _ = find_items([str(images)])
    ds = TrainDataset(items, patch=16, degradations=["noise:0-55", "jpeg:10-40", "rain"], seed=3)
    a, b = ds[(2, 1)], ds[(2, 1)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(ds[(3, 1)][0], a[0])
    assert a[0].shape == a[1].shape == (3, 16, 16)


def test_sr_paired_crops_are_aligned(tmp_path):
    lr = np.random.RandomState(0).randint(0, 256, (12, 16, 3), dtype=np.uint8)
    hr = np.kron(lr, np.ones((4, 4, 1), dtype=np.uint8))  # 4x4 blocks: flips and rotations commute with ::4
    for sub, arr in (("HR", hr), ("LR", lr)):
        (tmp_path / sub).mkdir()
        Image.fromarray(arr).save(tmp_path / sub / "a.png")
    items, desc = find_items([str(tmp_path)], scale=4)
    assert "paired HR + LR" in desc[0]
    ds = TrainDataset(items, patch=6, scale=4)
    for epoch in range(5):
        inp, tgt = ds[(epoch, 0)]
        assert inp.shape == (3, 6, 6) and tgt.shape == (3, 24, 24)
        assert torch.equal(inp, tgt[:, ::4, ::4])


def test_clean_sr_gives_lr_and_hr_and_masks_ride_along(images):
    items, _ = find_items([str(images)])
    inp, tgt = TrainDataset(items, patch=8, scale=4, degradations=["bicubic:4"])[(0, 0)]
    assert inp.shape == (3, 8, 8) and tgt.shape == (3, 32, 32)
    inp, tgt = TrainDataset(items, patch=16, degradations=["mask:0.5"])[(0, 0)]
    assert inp.shape == (4, 16, 16) and set(inp[3].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(inp[:3], tgt * inp[3:])
    inp, tgt = TrainDataset(items, patch=16, in_channels=1, degradations=["noise:25"])[(0, 0)]
    assert inp.shape == tgt.shape == (1, 16, 16)


def test_csv_lists_with_per_row_degradations(images, tmp_path):
    (tmp_path / "list.csv").write_text("target,degradation\nclean/img0.png,noise:25\nclean/img1.png,rain\n")
    items, desc = find_items([str(tmp_path / "list.csv")])
    assert [i.degradation for i in items] == ["noise:25", "rain"] and "csv" in desc[0]
    ds = TrainDataset(items, patch=16)
    assert ds[(0, 0)][0].shape == (3, 16, 16)


def test_sampler_shards_are_a_split_of_the_single_process_stream():
    one = EpochSampler(10, seed=1)
    stream = [k for _, k in zip(range(12), iter(one))]
    r0 = [k for _, k in zip(range(3), iter(EpochSampler(10, seed=1, rank=0, world=2)))]
    r1 = [k for _, k in zip(range(3), iter(EpochSampler(10, seed=1, rank=1, world=2)))]
    assert sorted(r0 + r1) == sorted(stream[:6])
    resumed = [k for _, k in zip(range(5), iter(EpochSampler(10, seed=1, start=7)))]
    assert resumed == stream[7:12]


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("arch", list_archs())
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(arch, images, tmp_path):
    name = get_record(arch).name
    # Adam at 1e-3 instead of each paper's optimiser: a handful of steps must move a random tiny net.
    cfg = _tiny_cfg(name, images, tmp_path / "out", optimizer="adam", lr=1e-3, schedule="constant", warmup_steps=0)
    trainer = Trainer(cfg)
    inp, tgt = next(trainer.batches())
    losses = [trainer.train_step(inp, tgt) for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_resume_is_exact(images, tmp_path):
    kw = dict(ema_decay=0.9, steps=6, grad_clip=1.0)
    straight = _tiny_cfg("spatial_rnn.denoise", images, tmp_path / "a", **kw)
    fit(straight, progress=False)
    split = _tiny_cfg("spatial_rnn.denoise", images, tmp_path / "b", **kw)
    fit(split, progress=False, stop_at=3)
    assert _state(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 3
    fit(split, progress=False)
    a, b = _state(tmp_path / "a/checkpoints/last.pt"), _state(tmp_path / "b/checkpoints/last.pt")
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(s[k], t[k]) if torch.is_tensor(s[k]) else s[k] == t[k] for k in s)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    straight_log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in straight_log]


def test_checkpoint_format(images, tmp_path):
    cfg = _tiny_cfg("msrn.sr_x2", images, tmp_path / "o", steps=2, checkpoint_interval=1, patch_size=8)
    fit(cfg, progress=False)
    folder = tmp_path / "o" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_00000001.pt", "step_00000002.pt"]
    ck = _state(folder / "last.pt")
    assert ck["format"] == CHECKPOINT_FORMAT and ck["step"] == 2
    assert (ck["arch"], ck["model_name"]) == ("msrn", "msrn.sr_x2")
    assert ck["ema"] is None and isinstance(ck["rng"]["torch"], torch.Tensor)
    assert ck["train_config"]["model"] == "msrn.sr_x2" and ck["train_config"]["data_description"]
    from restorekit.weights import build_model

    net = build_model(ck["arch"], ck["config"])
    net.load_state_dict(ck["model"])
    assert json.loads((tmp_path / "o" / "config.json").read_text())["patch_size"] == 8
    again = resolve(file=tmp_path / "o" / "config.json")  # a run's config.json is a valid --config file
    assert again.to_dict() == resolve(file=tmp_path / "o" / "config.json", overrides=ck["train_config"]).to_dict()
    assert again.patch_size == 8 and again.model == "msrn.sr_x2"
    other = _tiny_cfg("msrn.sr_x3", images, tmp_path / "o", steps=3, patch_size=8)
    with pytest.raises(RestorekitError, match="msrn.sr_x2"):
        fit(other, progress=False)


def test_validation_is_logged_with_a_convention(images, tmp_path, image_folder):
    val = image_folder("val", 2, (24, 24), seed=5, kind="blocks")
    cfg = _tiny_cfg(
        "spatial_rnn.denoise", images, tmp_path / "o", steps=2, val_data=str(val), val_degradation="noise:25"
    )
    summary = fit(cfg, progress=False)
    metrics = {m["metric"]: m for m in summary["metrics"]}
    assert metrics["psnr"]["dataset"] == "val" and metrics["psnr"]["convention"] == "full_image"
    assert 0 < metrics["psnr"]["value"] < 60
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["val"]["psnr"] == pytest.approx(metrics["psnr"]["value"])
    assert _state(tmp_path / "o/checkpoints/last.pt")["metrics"] == summary["metrics"]


def test_masked_models_are_validated_with_seeded_masks(images, tmp_path, image_folder):
    val = image_folder("val", 2, (24, 24), seed=5, kind="blocks")
    for name, spec in (("spatial_rnn.inpaint", "mask:0.5"), ("spatial_rnn.colorize", "hints:0.03")):
        cfg = _tiny_cfg(name, images, tmp_path / name, steps=1, val_data=str(val))
        assert cfg.degradations == [spec]  # the training degradation is the validation one
        metrics = {m["metric"]: m["value"] for m in fit(cfg, progress=False)["metrics"]}
        assert 0 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1, name


def test_cli_fit_end_to_end(images, tmp_path, train_cli, tiny_config, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"steps": 100, "lr": 0.5}))
    tiny = json.dumps(tiny_config("spatial_rnn"))
    cmd = ["fit", "--preset", "spatial_rnn.denoise", "--config", str(cfg)]
    cmd += ["--data", str(images), "--out", str(tmp_path / "run"), "--steps", "3", "--batch-size", "2"]
    cmd += ["--patch-size", "16", "--workers", "1", "--model-config", tiny, "--log-interval", "1", "--quiet"]
    monkeypatch.setenv("RESTOREKIT_SCAN_BACKEND", "reference")  # no per-test build
    monkeypatch.chdir(tmp_path)
    proc = train_cli(*cmd)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["steps"] == 3 and resolved["lr"] == 0.5 and resolved["optimizer"] == "sgd"
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
    assert _state(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3
    bad = train_cli(*cmd[:3], "--data", tmp_path / "nope")
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_training_warnings_do_not_leak(images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items, _ = find_items([str(images)])
        TrainDataset(items, patch=16, degradations=["noise:25"])[(0, 0)]


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(images, tmp_path):
    import signal
    import time

    tiny = json.dumps(dict(get_arch("msrn").tiny_config))
    cmd = [sys.executable, "-m", "restorekit.train", "fit", "--preset", "msrn.sr_x2", "--data", str(images)]
    cmd += ["--out", str(tmp_path / "run"), "--batch-size", "2", "--patch-size", "8"]
    cmd += ["--workers", "0", "--model-config", tiny, "--log-interval", "1", "--quiet", "--steps"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd + ["100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = tmp_path / "run" / "log.jsonl"
    try:
        deadline = time.monotonic() + 90
        while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr and proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped at step" in err, err
    stopped = _state(tmp_path / "run" / "checkpoints" / "last.pt")["step"]
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert stopped == steps[-1] >= 3
    more = cmd + [str(stopped + 2)]
    assert subprocess.run(more, capture_output=True, text=True, timeout=60, env=env).returncode == 0
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, stopped + 3))


def test_fine_tuning_starts_from_a_weights_file(images, tmp_path):
    from restorekit.weights import build_model, save_weights

    config = {**get_record("msrn.sr_x2").config, **get_arch("msrn").tiny_config}
    torch.manual_seed(123)
    start = build_model("msrn", config)
    path = tmp_path / "start.safetensors"
    save_weights(path, start.state_dict(), arch="msrn", config=config, name="msrn.sr_x2")
    cfg = _tiny_cfg("msrn.sr_x2", images, tmp_path / "o", init_weights=str(path), patch_size=8)
    trainer = Trainer(cfg)
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), start.state_dict().values()))
    wrong = _tiny_cfg("msrn.sr_x2", images, tmp_path / "p", init_weights=str(path), model_config={"n_feats": 8})
    with pytest.raises(RestorekitError):
        Trainer(wrong)


def test_fit_then_export_then_restore(images, tmp_path, train_cli, tiny_config, monkeypatch):
    from restorekit import Restorer

    tiny = json.dumps(tiny_config("spatial_rnn"))
    monkeypatch.setenv("RESTOREKIT_SCAN_BACKEND", "reference")
    fit_cmd = ["fit", "--preset", "spatial_rnn.denoise", "--data", str(images), "--out", str(tmp_path / "r")]
    fit_cmd += ["--steps", "2", "--batch-size", "2", "--patch-size", "16", "--workers", "0", "--model-config", tiny]
    fit_cmd += ["--ema-decay", "0.5", "--quiet"]
    proc = train_cli(*fit_cmd)
    assert proc.returncode == 0, proc.stderr
    exp = train_cli("export", tmp_path / "r", "-o", tmp_path / "rel")
    assert exp.returncode == 0, exp.stderr
    (weights,) = (tmp_path / "rel").glob("*.safetensors")
    ema = _state(tmp_path / "r" / "checkpoints" / "last.pt")["ema"]
    restorer = Restorer("spatial_rnn.denoise", weights=weights, device="cpu")
    exported = restorer.model.state_dict()
    assert all(torch.allclose(exported[k].float(), ema[k].float(), atol=1e-2, rtol=1e-2) for k in ema)  # fp16
    out = restorer.run(torch.rand(1, 3, 20, 20))
    assert out.shape == (1, 3, 20, 20) and torch.isfinite(out).all()


def test_ema_warms_up_so_an_early_export_is_not_the_initialisation():
    from restorekit.train.loop import EMA

    net = torch.nn.Linear(3, 2, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    assert [ema.decay_at(t) <= ema.decay_at(t + 1) for t in range(2000)] == [True] * 2000
    with torch.no_grad():
        net.weight.fill_(1.0)  # the model jumps away from its zero initialisation and stays there
    for t in range(1000):
        ema.update(net, t)
    # A flat 0.999 would leave 0.999**1000 = 37 % of the zero initialisation; the warm-up leaves 3.5e-22.
    left = 1 - float(ema.module.weight.mean())
    assert abs(left) < 1e-6, left


# ------------------------------------------------------------------------------------------------ interruptions


def _fit_cmd(images: Path, out: Path, *extra: str) -> list[str]:
    tiny = json.dumps(dict(get_arch("msrn").tiny_config))
    cmd = [sys.executable, "-m", "restorekit.train", "fit", "--preset", "msrn.sr_x2", "--data", str(images)]
    cmd += ["--out", str(out), "--batch-size", "2", "--patch-size", "8", "--model-config", tiny]
    cmd += ["--log-interval", "1", "--quiet", "--optimizer", "adam", "--lr", "1e-3", *extra]
    return cmd


def _log_steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _wait_for_log_lines(proc: subprocess.Popen, log: Path, n: int, timeout: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not (log.is_file() and len(log.read_text().splitlines()) >= n):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr and proc.stderr.read()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_with_an_unbroken_log(images, tmp_path):
    """SIGKILL leaves no chance to save: the rerun starts from the last checkpoint, drops the log lines written
    after it, and then logs exactly the losses of an uninterrupted run (every step once, in order)."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ("--steps", "14", "--checkpoint-interval", "4", "--workers", "1")
    straight = subprocess.run(_fit_cmd(images, tmp_path / "a", *args), capture_output=True, text=True, env=env)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "b"
    proc = subprocess.Popen(
        _fit_cmd(images, out, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_for_log_lines(proc, out / "log.jsonl", 5)  # past the step-4 checkpoint, before step 8's
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its loader worker, as an OOM killer or a reboot
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = len(_log_steps(out))
    saved = _state(out / "checkpoints" / "last.pt")["step"]
    # Usually killed between checkpoints (log ahead of the checkpoint); on a busy machine it may land on one.
    assert saved % 4 == 0 and 4 <= saved <= killed_at < 14, (saved, killed_at)
    again = subprocess.run(_fit_cmd(images, out, *args), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert f"resumed from {out / 'checkpoints' / 'last.pt'} at step {saved}" in again.stderr
    if killed_at > saved:
        assert f"{killed_at - saved} log lines after it were dropped" in again.stderr
    log, ref = _log_steps(out), _log_steps(tmp_path / "a")
    assert [r["step"] for r in log] == list(range(1, 15))
    assert [r["loss"] for r in log] == [r["loss"] for r in ref]  # the resumed steps are the same steps


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_still_saves(images, tmp_path):
    """A terminal's Ctrl-C or a job scheduler signals every process of the group, loader workers included: the
    workers leave it to the trainer, which saves and exits cleanly instead of failing on a dead worker."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    cmd = _fit_cmd(images, out, "--steps", "100000", "--workers", "2")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _wait_for_log_lines(proc, out / "log.jsonl", 3)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "stopped at step" in err and "Traceback" not in err, err
    assert _state(out / "checkpoints" / "last.pt")["step"] == _log_steps(out)[-1]["step"] >= 3


@pytest.mark.slow
def test_a_time_budgeted_run_ends_within_five_percent_and_exports(images, tmp_path):
    import time

    from restorekit import Restorer

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    budget = 30.0  # 5 % is 1.5 s: room for a busy machine's slowest step, which the reserve keeps free
    cmd = _fit_cmd(images, out, "--time-budget", f"{budget:g}s", "--steps", "10000000", "--workers", "0")
    cmd += ["--schedule", "cosine", "--warmup-steps", "50", "--ema-decay", "0.999", "--min-lr", "1e-6"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert abs(wall - budget) <= 0.05 * budget, wall
    log = [r for r in _log_steps(out) if "loss" in r]
    steps = log[-1]["step"]
    assert steps >= 3 and log[-1]["planned_steps"] == steps  # the plan converged on what was run
    assert log[-1]["lr"] < 0.02 * 1e-3  # the cosine reached its floor at the end of the budget, not of --steps
    warm = [r["step"] for r in log if r["lr"] > 0.5e-3]
    # The warm-up was fitted to the plan (5 %), not the 50 steps asked for; the first two steps, before any
    # speed is measured, run in the asked-for warm-up.
    assert warm and warm[0] <= 3 + 0.05 * steps
    ckpt = _state(out / "checkpoints" / "last.pt")
    assert ckpt["budget"]["seconds"] == budget and ckpt["budget"]["spent_s"] <= budget
    (weights,) = (out / "export").glob("*.safetensors")
    assert (out / "export" / "README.md").is_file()
    result = Restorer("msrn.sr_x2", weights=weights, device="cpu").run(torch.rand(1, 3, 12, 12))
    assert result.shape == (1, 3, 24, 24)
    # A folder the user names for the export must be empty: refused before any training, nothing replaced.
    taken = tmp_path / "release"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    other = _fit_cmd(images, tmp_path / "run2", "--time-budget", "30s", "--export-dir", str(taken))
    refused = subprocess.run(other, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "is not empty (mine.txt)" in refused.stderr, refused.stderr
    assert not (tmp_path / "run2" / "checkpoints").exists() and (taken / "mine.txt").read_text() == "keep"
    # Rerun with the budget spent: it exports again at once and trains no further.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and _state(out / "checkpoints" / "last.pt")["step"] == ckpt["step"], again.stderr


def test_trim_log_keeps_what_the_checkpoint_holds(tmp_path):
    from restorekit.train.loop import _trim_log

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": i, "loss": float(i)}) for i in (1, 2, 3, 4)] + ['{"step": 5, "lo']  # a cut line
    log.write_text("\n".join(lines) + "\n")
    assert _trim_log(log, 3) == 2 and [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    assert _trim_log(log, 3) == 0 and _trim_log(tmp_path / "absent.jsonl", 3) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"], "rewritten in place, no temporary file left"


def test_a_failed_checkpoint_save_leaves_the_previous_one_whole(tmp_path):
    import stat
    import threading

    from restorekit.train.checkpoint import atomic_save, find_checkpoint
    from restorekit.train.publish import ExportError

    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"step": 1}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "checkpoints are the owner's alone"
    with pytest.raises(TypeError, match="pickle"):
        atomic_save({"step": 2, "unpicklable": threading.Lock()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"], "the half-written temporary file is gone"
    # A save killed outright leaves its hidden temporary file; it is not offered as a checkpoint.
    (path.parent / ".step_00000002.pt.k1ll3d.tmp.pt").write_bytes(b"cut short")
    with pytest.raises(ExportError, match=r"has: last\.pt \("):
        find_checkpoint(tmp_path, 2, error=ExportError)


def test_time_budget_plan_counts_earlier_invocations():
    from restorekit.train.loop import TimeBudget

    b = TimeBudget(100.0, started=1000.0, spent=40.0)
    assert b.deadline == 1060.0 and b.plan(0, 1001.0) == (None, False)  # the first step is not timed
    # 10 steps per second; kept back: 1 s (save, export, exit) + the slowest step (0.1 s), before 1060.
    planned, over = b.plan(10, 1002.0)
    assert abs(planned - (10 + (1060 - 1.1 - 1002) * 10)) <= 1 and not over
    b.saved(2.0)  # a slow save: 4 x 2 + 0.5 s for the last save, the export and the exit, + 0.1 s
    assert b.reserve == pytest.approx(8.6)
    assert abs(b.plan(20, 1003.0)[0] - (20 + (1060 - 8.6 - 1003) * 10)) <= 1 and b.over(1051.5)
    # The machine gets busy: 1 step/s for the next 60 s (window 30 s); the plan follows the recent rate and
    # keeps a slow step (1 s) in reserve.
    slow = TimeBudget(1000.0, started=0.0)
    for t in range(11):
        slow.plan(10 * t, float(t))  # 10 steps per second for 10 s
    for t in range(1, 61):
        planned, _ = slow.plan(100 + t, 10.0 + t)
    assert slow.reserve == pytest.approx(2.0) and abs(planned - (160 + (1000 - 2 - 70) * 1.0)) <= 1
    from restorekit.train.config import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "8m", "1.5h", " 2 min ")] == [90, 90, 480, 5400, 120]
    for bad in ("", "8 parsecs", "-3m", "0"):
        with pytest.raises(InputError, match="time budget"):
            parse_duration(bad)


def test_cpu_policy_uses_bf16_and_channels_last_only_where_measured_faster():
    from restorekit.train.config import CPU_POLICY
    from restorekit.train.loop import cpu_bf16_supported, fast_modes

    assert set(CPU_POLICY) == set(list_archs())  # every architecture was measured
    cpu = torch.device("cpu")
    assert fast_modes("spatial_rnn", cpu) == (False, False)  # its scan runs in fp32; both measured slower
    assert fast_modes("dsrir", cpu) == (cpu_bf16_supported(), True)
    assert fast_modes("dsrir", torch.device("meta")) == (False, False)
    cfg = resolve("dsrir.all_in_one", overrides=dict(model_config=dict(get_arch("dsrir").tiny_config), device="cpu"))
    trainer = Trainer(cfg, data=False)
    assert (trainer.bf16, trainer.channels_last) == fast_modes("dsrir", cpu)
    off = Trainer(
        resolve("dsrir.all_in_one", overrides=dict(cfg.to_dict(), bf16=False, channels_last=False)), data=False
    )
    assert (off.bf16, off.channels_last) == (False, False)
    x = torch.rand(2, 3, 16, 16)
    assert math.isfinite(trainer.train_step(x, x)) and math.isfinite(off.train_step(x, x))
