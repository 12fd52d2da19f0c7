"""The `restorekit` command end to end, in subprocesses, on real files in a temporary folder."""

import os
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
from restorekit.archs.msrn import MSRN
from restorekit.weights import save_weights

TINY = {"scale": 2, "n_feats": 4, "n_blocks": 2, "n_colors": 3, "rgb_range": 255.0}


def cli(*args, env=None, check=None, **kw):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "restorekit", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        **kw,
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny_x2.safetensors"
    save_weights(path, MSRN(**TINY).state_dict(), arch="msrn", config=TINY, name="msrn.sr_x2")
    return path


def _images(folder: Path, n: int, size=(24, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_version_list_info():
    assert cli("--version", check=0).stdout.strip() == f"restorekit {__version__}"
    out = cli("list", "--task", "sr", check=0).stdout
    assert "msrn.sr_x4" in out and "msrn.sr_x2" in out
    info = cli("info", "msrn.sr_x2", check=0).stdout
    assert "3f8567d12441e9c325d9dc476f5751ac22f34cae" in info and "MIT" in info
    bad = cli("info", "msrnn.sr_x4", check=1)
    assert "Did you mean" in bad.stderr and "restorekit list" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("run", check=2).returncode == 2  # argparse usage error


def test_run_folder_glob_and_bad_file(tmp_path, tiny_weights):
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


def test_never_overwrites_an_input(tmp_path, tiny_weights):
    src = _images(tmp_path, 2)
    before = [p.read_bytes() for p in src]
    proc = cli(
        "run", "msrn.sr_x2", *src, "-o", tmp_path, "--weights", tiny_weights, "--overwrite", "--no-progress", check=1
    )
    assert proc.stderr.count("would overwrite an input") == 2
    assert [p.read_bytes() for p in src] == before


def test_interrupt_and_resume(tmp_path):
    # Full-width MSRN x2 (random weights) so each image takes long enough to interrupt mid-run.
    torch.manual_seed(0)
    full = {**TINY, "n_feats": 64, "n_blocks": 8}
    weights = tmp_path / "full.safetensors"
    save_weights(weights, MSRN(**full).state_dict(), arch="msrn", config=full, name="msrn.sr_x2")
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


def test_download_offline_says_what_to_do(tmp_path):
    proc = cli("download", "msrn.sr_x2", env={"RESTOREKIT_OFFLINE": "1", "RESTOREKIT_CACHE": str(tmp_path)}, check=1)
    assert "restorekit download" in proc.stderr and "Traceback" not in proc.stderr


def test_convert_then_run(tmp_path):
    torch.manual_seed(0)
    net = MSRN(**TINY)
    ckpt = tmp_path / "authors.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, ckpt)
    dst = tmp_path / "ours.safetensors"
    cli("convert", ckpt, dst, "--arch", "msrn", "--config", '{"scale": 2, "n_feats": 4, "n_blocks": 2}', check=0)
    _images(tmp_path / "in", 1)
    cli("run", "msrn.sr_x2", tmp_path / "in", "-o", tmp_path / "out", "--weights", dst, "--no-progress", check=0)
    assert Image.open(tmp_path / "out" / "img0.png").size == (64, 48)
