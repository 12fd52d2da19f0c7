"""The `restorekit` command under bad inputs and hostile conditions: nothing lost, no traceback, a way forward.

Most cases call the CLI's ``main`` in this process (an exception escaping it fails the test: that would be a
traceback for the user). What needs a real process runs one: killing a run with SIGKILL, and full or
read-only disks. Those are real: a tiny tmpfs and a read-only bind mount inside a user namespace
(``unshare -rm``, no root needed), or, where namespaces are unavailable, a folder without write permission
and RLIMIT_FSIZE (the kernel's per-file size limit, which fails writes with EFBIG).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.cli import main
from restorekit.weights import read_weights

from .deadline import finishes

MODEL = "spatial_rnn.denoise"  # bundled: every case runs offline on real weights


def _images(folder: Path, n: int, size: tuple[int, int] = (16, 16), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _checkpoint(path: Path, full: bool = False) -> Path:
    from restorekit.archs.spatial_rnn import SPEC, SpatialRNN

    config = {**SPEC.default_config, **({} if full else SPEC.tiny_config)}
    torch.manual_seed(0)
    torch.save(SpatialRNN(**config).state_dict(), path)
    return path


# ------------------------------------------------------------------ nothing is replaced unasked


def test_convert_never_replaces_a_photo_and_needs_a_safetensors_name(tmp_path, capsys):
    photo = tmp_path / "holiday.png"
    Image.fromarray(np.full((8, 8, 3), 123, np.uint8)).save(photo)
    before = photo.read_bytes()
    sd = _checkpoint(tmp_path / "sd.pth", full=True)
    code, _, err = _run(capsys, "convert", sd, photo, "--model", MODEL)
    assert code == 1 and "name the output with a .safetensors suffix" in err and photo.read_bytes() == before
    code, _, err = _run(capsys, "convert", sd, photo, "--model", MODEL, "--overwrite")
    assert code == 1 and photo.read_bytes() == before, "not even --overwrite turns a photo into weights"


def test_convert_refuses_an_existing_file_without_overwrite(tmp_path, capsys):
    sd = _checkpoint(tmp_path / "sd.pth", full=True)
    dst = tmp_path / "w.safetensors"
    assert _run(capsys, "convert", sd, dst, "--model", MODEL)[0] == 0
    first = dst.read_bytes()
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save({k: torch.randn_like(v) for k, v in torch.load(sd).items()}, other)
    code, _, err = _run(capsys, "convert", other, dst, "--model", MODEL)
    assert code == 1 and f"{dst} already exists; pass overwrite=True (--overwrite)" in err
    assert dst.read_bytes() == first
    assert _run(capsys, "convert", other, dst, "--model", MODEL, "--overwrite")[0] == 0
    assert dst.read_bytes() != first and read_weights(dst)[1]["name"] == MODEL
    assert not list(tmp_path.glob(".*.tmp*")), "written through a temporary file that is gone"


def test_eval_results_are_not_replaced_unasked(tmp_path, capsys):
    data = tmp_path / "clean"
    _images(data, 2)
    out = tmp_path / "r.json"
    out.write_text("my notes\n")
    code, _, err = _run(capsys, "eval", "identity", "--data", data, "--degrade", "noise:25", "--json", out)
    assert code == 1 and "r.json already exists; pass --overwrite" in err and out.read_text() == "my notes\n"
    args = ("eval", "identity", "--data", data, "--degrade", "noise:25", "--json", out, "--overwrite")
    assert _run(capsys, *args)[0] == 0
    assert '"psnr"' in out.read_text()


def test_run_skips_finished_outputs_and_redoes_them_only_with_overwrite(tmp_path, capsys):
    _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert "2 written" in _run(capsys, "run", MODEL, tmp_path / "in", "-o", out, "--no-progress")[1]
    stamp = (out / "img0.png").stat().st_mtime_ns
    assert "2 skipped" in _run(capsys, "run", MODEL, tmp_path / "in", "-o", out, "--no-progress")[1]
    assert (out / "img0.png").stat().st_mtime_ns == stamp
    assert "2 written" in _run(capsys, "run", MODEL, tmp_path / "in", "-o", out, "--no-progress", "--overwrite")[1]


# ------------------------------------------------------------------ outputs never become inputs


def test_an_output_folder_inside_the_input_folder_is_never_read_back(tmp_path, capsys):
    photos = tmp_path / "photos"
    _images(photos, 3)
    restored = photos / "restored"
    code, out, _ = _run(capsys, "run", MODEL, photos, "-o", restored, "--no-progress")
    assert code == 0 and "3 written, 0 skipped" in out
    code, out, err = _run(capsys, "run", MODEL, photos, "-o", restored, "--no-progress")
    assert code == 0 and "0 written, 3 skipped (already there), 0 failed" in out, out + err
    assert not (restored / "restored").exists()
    # A glob over the whole tree does not pick them up either.
    code, out, _ = _run(capsys, "run", MODEL, str(photos / "**" / "*.png"), "-o", restored, "--no-progress")
    assert code == 0 and "3 skipped" in out and not (restored / "restored").exists()


def test_the_input_folder_itself_as_output_is_refused_before_any_work(tmp_path, capsys):
    photos = tmp_path / "photos"
    before = {p: p.read_bytes() for p in _images(photos, 2)}
    code, _, err = _run(capsys, "run", MODEL, photos, "-o", photos, "--overwrite", "--no-progress")
    assert code == 1 and "is the input folder" in err and "every result would replace its input" in err
    assert {p: p.read_bytes() for p in before} == before and len(list(photos.iterdir())) == 2


def test_two_inputs_with_one_name_fail_the_second_and_keep_the_first(tmp_path, capsys):
    a = _images(tmp_path / "a", 1)[0]
    b = _images(tmp_path / "b", 1, seed=1)[0]
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "run", MODEL, a, b, "-o", out, "--no-progress")
    assert code == 1 and "1 written" in stdout and f"{b}: output {out / 'img0.png'} is also the output of {a}" in err


# ------------------------------------------------------------------ bad inputs and options: no traceback


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--device", "cuda"], "device 'cuda' is not available"),
        (["--device", "potato"], "device 'potato' is not a device name; devices on this machine: cpu"),
        (["--dtype", "int4"], "Unknown dtype 'int4'"),
        (["--weights", "/nonexistent/w.safetensors"], "weights file /nonexistent/w.safetensors does not exist"),
        (["--mask", "m.png"], "takes no mask"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, words):
    if torch.cuda.is_available() and "cuda" in extra:
        pytest.skip("this machine has CUDA")
    _images(tmp_path / "in", 1)
    (tmp_path / "m.png").write_bytes((tmp_path / "in" / "img0.png").read_bytes())
    code, _, err = _run(capsys, "run", MODEL, tmp_path / "in", "-o", tmp_path / "out", "--no-progress", *extra)
    assert code == 1 and words in err and err.startswith("restorekit: error: "), err
    assert not (tmp_path / "out").exists()


def test_bad_files_in_a_batch_fail_alone_and_say_why(tmp_path, capsys):
    src = tmp_path / "in"
    _images(src, 1)
    (src / "empty.png").write_bytes(b"")
    frames = [Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
    frames[0].save(src / "anim.webp", save_all=True, append_images=frames[1:], duration=40, lossless=True)
    Image.fromarray(np.full((6, 6), 200.0, np.float32)).save(src / "float255.tif")
    os.mkfifo(tmp_path / "pipe.png")
    args = ("run", MODEL, src, tmp_path / "pipe.png", "-o", tmp_path / "out", "--no-progress")
    code, out, err = finishes(lambda: _run(capsys, *args), seconds=60)
    assert code == 1 and "1 written, 0 skipped (already there), 4 failed" in out
    assert "empty.png: " in err and "the file is empty (0 bytes)" in err
    assert "anim.webp: " in err and "with 2 frames" in err
    assert "float255.tif: " in err and "pass input_range=(0, 255) (CLI: --input-range 0:255)" in err
    assert "pipe.png: not a regular file (a named pipe, device or socket)" in err
    code, out, _ = _run(capsys, "run", MODEL, src / "float255.tif", "-o", tmp_path / "out", "--input-range", "0:255")
    assert code == 0 and "1 written" in out and (tmp_path / "out" / "float255.tif").exists()


def test_a_malformed_input_range_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", MODEL, str(tmp_path), "-o", str(tmp_path / "o"), "--input-range", "255"])
    assert info.value.code == 2 and "give the range as LO:HI" in capsys.readouterr().err


def test_a_malicious_checkpoint_is_refused_by_convert(tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"conv0.weight": Payload()}, protocol=2))
    code, out, err = _run(capsys, "convert", bad, tmp_path / "w.safetensors", "--model", MODEL)
    assert code == 1 and "refused for safety" in err and "should-never-run" not in out + err
    assert not (tmp_path / "w.safetensors").exists()


# ------------------------------------------------------------------ killed mid-run, then resumed


@pytest.fixture(scope="module")
def child_env() -> dict[str, str]:
    """The environment for restorekit in a child process: it reuses the spatial-RNN scan this process built
    (every test has a fresh cache, and building the extension again would take half a minute per process)."""
    from restorekit import ops

    library = ops.backend_info()["library"]
    extra = {"RESTOREKIT_EXT_CACHE": str(Path(library).parent.parent)} if library else {}
    return {**os.environ, **extra, "PY": sys.executable}


def _cli(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "restorekit", *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.slow  # spawns processes
def test_a_run_killed_with_sigkill_loses_nothing_and_resumes(tmp_path, child_env):
    src = _images(tmp_path / "in", 12, size=(96, 96))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "restorekit", "run", MODEL, str(tmp_path / "in"), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("[!.]*.png")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: what a power cut or the OOM killer does
    proc.wait(timeout=60)
    proc.stderr.close()
    done = sorted(out.glob("[!.]*.png"))  # not the temporary ".img3.png.<random>.tmp.png" of a write cut short
    assert proc.returncode == -signal.SIGKILL and 1 <= len(done) < 12, len(done)
    for p in done:  # every output that exists is complete: writes go through a temporary file and a rename
        Image.open(p).load()
    resumed = _cli("run", MODEL, tmp_path / "in", "-o", out, "--no-progress", env=child_env)
    assert resumed.returncode == 0 and f"{12 - len(done)} written, {len(done)} skipped" in resumed.stdout
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in src)
    assert not list(out.glob(".*")), "no temporary file survives the resumed run"
    from restorekit.restorer import Restorer

    r = Restorer(MODEL, device="cpu")
    for p in (done[0], out / src[-1].name):  # one finished before the kill, one after the resume
        assert np.array_equal(np.asarray(Image.open(p)), r.run(tmp_path / "in" / p.name))


# ------------------------------------------------------------------ full and read-only disks


def _namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NAMESPACES = _namespaces()


def _shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` in a private mount namespace (mounts vanish with it)."""
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # spawns processes
def test_a_full_disk_fails_each_write_cleanly_and_the_rerun_completes(tmp_path, child_env):
    src = tmp_path / "in"
    _images(src, 6, size=(64, 64))  # ~12 KB each as PNG: random pixels do not compress
    out, keep = tmp_path / "out", tmp_path / "after_first_run"
    out.mkdir()
    sd = _checkpoint(tmp_path / "sd.pth", full=True)  # ~600 KB of weights
    run = f'"$PY" -m restorekit run {MODEL} {src} -o {out} --no-progress'
    convert = f'"$PY" -m restorekit convert {sd} {out}/w.safetensors --model {MODEL}'
    if NAMESPACES:
        mechanism = "the disk is full"
        script = f"""
            mount -t tmpfs -o size=40k tmpfs {out} || exit 97
            {run} > {tmp_path}/1.out 2> {tmp_path}/1.err; echo $? > {tmp_path}/1.rc
            {convert} > {tmp_path}/c.out 2> {tmp_path}/c.err; echo $? > {tmp_path}/c.rc
            cp -a {out} {keep}
            mount -o remount,size=4m {out}
            {run} > {tmp_path}/2.out 2> {tmp_path}/2.err; echo $? > {tmp_path}/2.rc
            cp -a {out} {tmp_path}/after_second_run
        """
        done = _shell(script, child_env)
        assert done.returncode == 0, done.stderr
    else:  # RLIMIT_FSIZE: a file may not grow past 8000 bytes; the write fails with EFBIG instead of ENOSPC
        mechanism = "larger than this system or its limits allow"

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))

        for tag, cmd in (("1", run), ("c", convert)):
            p = subprocess.run(
                ["sh", "-c", cmd],
                capture_output=True,
                text=True,
                preexec_fn=limit,
                timeout=300,
                env=child_env,
            )
            (tmp_path / f"{tag}.out").write_text(p.stdout)
            (tmp_path / f"{tag}.err").write_text(p.stderr)
            (tmp_path / f"{tag}.rc").write_text(str(p.returncode))
        shutil.copytree(out, keep)
        p = subprocess.run(["sh", "-c", run], capture_output=True, text=True, env=child_env)
        (tmp_path / "2.out").write_text(p.stdout)
        (tmp_path / "2.rc").write_text(str(p.returncode))
        shutil.copytree(out, tmp_path / "after_second_run")
    first_err = (tmp_path / "1.err").read_text()
    assert (tmp_path / "1.rc").read_text().strip() == "1" and "Traceback" not in first_err
    assert mechanism in first_err and "Nothing was written there" in first_err, first_err
    survivors = sorted(keep.glob("*.png"))
    assert len(survivors) < 6 and not list(keep.glob(".*")), "no half-written output, no temporary file"
    for p in survivors:
        Image.open(p).load()
    conv_err = (tmp_path / "c.err").read_text()
    assert (tmp_path / "c.rc").read_text().strip() == "1" and mechanism in conv_err and "Traceback" not in conv_err
    assert not (keep / "w.safetensors").exists()
    second = (tmp_path / "2.out").read_text()
    assert (tmp_path / "2.rc").read_text().strip() == "0", second
    assert f"{6 - len(survivors)} written, {len(survivors)} skipped" in second
    assert len(list((tmp_path / "after_second_run").glob("*.png"))) == 6


@pytest.mark.slow  # spawns processes
def test_a_read_only_output_folder_fails_cleanly(tmp_path, child_env):
    src = tmp_path / "in"
    _images(src, 2)
    out = tmp_path / "out"
    out.mkdir()
    run = f'"$PY" -m restorekit run {MODEL} {src} -o {out} --no-progress'
    if os.geteuid() != 0:
        out.chmod(0o555)
        p = subprocess.run(["sh", "-c", run], capture_output=True, text=True, env=child_env)
        out.chmod(0o755)
        words = "permission denied"
    elif NAMESPACES:
        p = _shell(f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && {run}", child_env)
        words = "the file system is read-only"
    else:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only for this process")
    assert p.returncode == 1 and "0 written, 0 skipped (already there), 2 failed" in p.stdout, p.stdout + p.stderr
    assert p.stderr.count(words) == 2 and "Traceback" not in p.stderr
    assert list(out.iterdir()) == []
