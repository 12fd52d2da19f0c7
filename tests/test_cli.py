"""The `restorekit` command end to end on real files in a temporary folder: in this process through
``restorekit.cli.main`` (the ``cli`` fixture), and in real processes where the process itself is the point (the
``python -m restorekit`` entry point, an interrupt)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import __version__
from restorekit.registry import get_arch
from restorekit.weights import save_weights

from .image_files import write_images


def _sr_x2_config(**overrides) -> dict:
    """msrn.sr_x2's full config: the defaults at scale 2 (with ``overrides``, e.g. the tiny widths)."""
    return {**get_arch("msrn").default_config, "scale": 2, **overrides}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_config, tiny_model):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny_x2.safetensors"
    config = _sr_x2_config(**tiny_config("msrn"))
    save_weights(path, tiny_model("msrn", scale=2).state_dict(), arch="msrn", config=config, name="msrn.sr_x2")
    return path


def _images(folder: Path, n: int, size=(24, 32)) -> list[Path]:
    return write_images(folder, n, size)


def test_version_list_info(cli):
    assert cli("--version", check=0).stdout.strip() == f"restorekit {__version__}"
    out = cli("list", "--task", "sr", check=0).stdout
    assert "msrn.sr_x4" in out and "msrn.sr_x2" in out
    info = cli("info", "msrn.sr_x2", check=0).stdout
    assert "3f8567d12441e9c325d9dc476f5751ac22f34cae" in info and "MIT" in info
    bad = cli("info", "msrnn.sr_x4", check=1)
    assert "Did you mean" in bad.stderr and "restorekit list" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("run", check=2).returncode == 2  # argparse usage error


def test_run_folder_glob_and_bad_file(tmp_path, tiny_weights, cli):
    src = tmp_path / "in"
    good = _images(src, 2)
    _images(src / "sub", 1)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    proc = cli(
        "run",
        "msrn.sr_x2",
        src,
        str(tmp_path / "extra" / "*.png"),
        "-o",
        out,
        "--weights",
        tiny_weights,
        "--no-progress",
        check=1,
    )
    assert "broken.png" in proc.stderr and "pattern matched no file" in proc.stderr
    assert Image.open(out / "img0.png").size == (64, 48)
    assert (out / "sub" / "img0.png").exists(), "folder structure is kept"
    assert not list(out.rglob(".*.tmp*")), "no temporary files left"
    assert "3 written" in proc.stdout
    # a second run skips what exists; --overwrite redoes it
    stamp = (out / "img1.png").stat().st_mtime_ns
    again = cli("run", "msrn.sr_x2", good[1], "-o", out, "--weights", tiny_weights, "--no-progress", check=0)
    assert "1 skipped" in again.stdout and (out / "img1.png").stat().st_mtime_ns == stamp
    redo = cli(
        "run", "msrn.sr_x2", good[1], "-o", out, "--weights", tiny_weights, "--no-progress", "--overwrite", check=0
    )
    assert "1 written" in redo.stdout


def test_never_overwrites_an_input(tmp_path, tiny_weights, cli):
    src = _images(tmp_path, 2)
    before = [p.read_bytes() for p in src]
    proc = cli(
        "run", "msrn.sr_x2", *src, "-o", tmp_path, "--weights", tiny_weights, "--overwrite", "--no-progress", check=1
    )
    assert proc.stderr.count("would overwrite an input") == 2
    assert [p.read_bytes() for p in src] == before


@pytest.mark.slow
def test_the_module_entry_point_is_the_command():
    # python -m restorekit in a real process: the same output and exit statuses as main() in this process.
    def run(*args):
        return subprocess.run([sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, timeout=300)

    assert run("--version").stdout.strip() == f"restorekit {__version__}"
    bad = run("info", "msrnn.sr_x4")
    assert bad.returncode == 1 and "Did you mean" in bad.stderr and "Traceback" not in bad.stderr
    assert run("run").returncode == 2  # argparse usage error


@pytest.mark.slow
def test_interrupt_and_resume(tmp_path, cli):
    # Full-width MSRN x2 (random weights) so each image takes long enough to interrupt mid-run.
    torch.manual_seed(0)
    full = _sr_x2_config()
    weights = tmp_path / "full.safetensors"
    save_weights(weights, get_arch("msrn").build(**full).state_dict(), arch="msrn", config=full, name="msrn.sr_x2")
    src = _images(tmp_path / "in", 6, size=(96, 96))
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "restorekit",
        "run",
        "msrn.sr_x2",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--weights",
        str(weights),
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "img0.png").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    done_first = sorted(p.name for p in out.glob("*.png"))
    assert proc.returncode == 130, err
    assert "interrupted" in err and 1 <= len(done_first) < 6
    assert not list(out.glob(".*.tmp*")), "an interrupted write leaves no temporary file"
    stamps = {n: (out / n).stat().st_mtime_ns for n in done_first}
    # a run killed hard can leave a temporary file; the next run removes it
    stale = out / ".img5.png.abc123.tmp.png"
    stale.write_bytes(b"partial")
    resumed = cli("run", "msrn.sr_x2", tmp_path / "in", "-o", out, "--weights", weights, "--no-progress", check=0)
    assert f"{len(done_first)} skipped" in resumed.stdout
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in src]
    assert all((out / n).stat().st_mtime_ns == t for n, t in stamps.items()), "finished outputs are not redone"
    assert not stale.exists()


def test_download_offline_says_what_to_do(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path))
    proc = cli("download", "msrn.sr_x2", check=1)
    assert "restorekit download" in proc.stderr and "Traceback" not in proc.stderr


def test_convert_then_run(tmp_path, cli, tiny_config, tiny_model):
    torch.manual_seed(0)
    net = tiny_model("msrn", scale=2)
    ckpt = tmp_path / "authors.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, ckpt)
    dst = tmp_path / "ours.safetensors"
    cli("convert", ckpt, dst, "--arch", "msrn", "--config", json.dumps(tiny_config("msrn", scale=2)), check=0)
    _images(tmp_path / "in", 1)
    cli("run", "msrn.sr_x2", tmp_path / "in", "-o", tmp_path / "out", "--weights", dst, "--no-progress", check=0)
    assert Image.open(tmp_path / "out" / "img0.png").size == (64, 48)


@pytest.fixture(scope="module")
def inpaint_weights(tmp_path_factory, tiny_config):
    """A randomly initialised tiny spatial_rnn.inpaint saved as a restorekit safetensors file."""
    spec = get_arch("spatial_rnn")
    config = {**spec.default_config, **tiny_config("spatial_rnn", condition="mask")}
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "inpaint_tiny.safetensors"
    save_weights(path, spec.build(**config).state_dict(), arch="spatial_rnn", config=config, name="spatial_rnn.inpaint")
    return path


def _mask_image(path: Path, seed: int, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((np.random.default_rng(seed).random(size) > 0.5) * 255).astype(np.uint8)).save(path)
    return path


def test_run_with_masks(tmp_path, inpaint_weights, cli):
    from restorekit.restorer import Restorer

    src = tmp_path / "in"
    _images(src, 3)
    _images(src / "sub", 1)
    Image.open(src / "img2.png").convert("RGB").save(src / "photo.jpg")
    (src / "img2.png").unlink()
    masks = tmp_path / "masks"
    _mask_image(masks / "img0.png", 1)  # the same name
    _mask_image(masks / "sub" / "img0.png", 2)  # the same relative name
    _mask_image(masks / "photo.png", 3)  # the same stem, .png
    out = tmp_path / "out"
    w = ["--weights", inpaint_weights, "--device", "cpu", "--no-progress"]
    proc = cli("run", "spatial_rnn.inpaint", src, "-o", out, "--mask", masks, *w, check=1)
    assert "3 written" in proc.stdout and "1 failed" in proc.stdout
    assert f"img1.png: no mask for it: looked for {masks / 'img1.png'}" in proc.stderr, proc.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == ["img0.png", "photo.jpg", "sub/img0.png"]
    # each output is the library's result for that input with its own mask
    r = Restorer("spatial_rnn.inpaint", weights=inpaint_weights, device="cpu")
    for rel, mask in (("img0.png", "img0.png"), ("sub/img0.png", "sub/img0.png")):
        want = r.run(src / rel, mask=masks / mask)
        assert np.array_equal(np.asarray(Image.open(out / rel)), want), rel
        other = r.run(src / rel, mask=masks / "photo.png")
        assert not np.array_equal(other, want), "the mask changes the result"
    # one input, one mask file
    single = cli(
        "run", "spatial_rnn.inpaint", src / "img1.png", "-o", tmp_path / "one", "--mask", masks / "img0.png", *w
    )
    assert single.returncode == 0, single.stderr
    want = r.run(src / "img1.png", mask=masks / "img0.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "img1.png")), want)
    # a mask of the wrong size fails that input, not the run
    _mask_image(masks / "img1.png", 4, size=(10, 10))
    bad = cli("run", "spatial_rnn.inpaint", src / "img1.png", "-o", tmp_path / "two", "--mask", masks, *w, check=1)
    assert "img1.png" in bad.stderr and "one size" in bad.stderr and "Traceback" not in bad.stderr


def test_run_mask_errors_come_before_any_work(tmp_path, inpaint_weights, tiny_weights, cli):
    src = tmp_path / "in"
    _images(src, 2)
    mask = _mask_image(tmp_path / "m.png", 0)
    out = tmp_path / "out"
    w = ["--device", "cpu", "--no-progress"]
    cases = [
        (["spatial_rnn.inpaint", src, "--weights", inpaint_weights], "needs a mask per input: pass --mask"),
        (["msrn.sr_x2", src, "--weights", tiny_weights, "--mask", mask], "takes no mask"),
        (["spatial_rnn.inpaint", src, "--weights", inpaint_weights, "--mask", mask], "one file but there are 2"),
        (["spatial_rnn.inpaint", src, "--weights", inpaint_weights, "--mask", tmp_path / "nope"], "no such file"),
    ]
    for args, message in cases:
        proc = cli("run", *args, "-o", out, *w, check=1)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists(), "nothing is written"
