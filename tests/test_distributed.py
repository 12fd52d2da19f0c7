"""The Ray engine (``restorekit.distributed``, ``restorekit run --engine ray``) on a real local Ray: the same files,
byte for byte, and the same report as ``restorekit run``; a killed run resumed without redoing finished files;
masks; ``restore_dataset`` on ``ray.data.read_images``. One Ray (2 CPUs) for the module; skipped without Ray."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit.batch import run_batch
from restorekit.errors import RestorekitError
from restorekit.methods import runner
from restorekit.registry import get_arch
from restorekit.weights import save_weights

from .image_files import write_images

MODEL = "msrn.sr_x2"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, extension_cache):
    """A local Ray with 2 CPUs for the whole module; its workers (and those of every driver that joins it) see
    private caches and the reference scan (the native one would be compiled first)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        pytest.skip('Ray Data is not installed: pip install "restorekit[ray]" (the test extra includes it)')
    root = tmp_path_factory.mktemp("ray_env")
    with pytest.MonkeyPatch.context() as mp:
        # Set before ray.init: the raylet, and every worker it starts, inherits this environment.
        mp.setenv("RESTOREKIT_CACHE", str(root / "restorekit"))
        mp.setenv("RESTOREKIT_EXT_CACHE", str(extension_cache))
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.setenv("RESTOREKIT_SCAN_BACKEND", "reference")
        context = ray.init(num_cpus=2, include_dashboard=False)
        # CPU convolutions sum in an order that depends on the thread count: the runs in this process use as
        # many torch threads as the default actors (the CPUs of the node, 2, or fewer where torch has fewer).
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, 2))
        try:
            yield context.address_info["address"]
        finally:
            torch.set_num_threads(threads)
            ray.shutdown()


def _msrn_weights(path: Path, **config) -> Path:
    torch.manual_seed(0)
    full = {**get_arch("msrn").default_config, "scale": 2, **config}
    save_weights(path, get_arch("msrn").build(**full).state_dict(), arch="msrn", config=full, name=MODEL)
    return path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_config):
    return _msrn_weights(tmp_path_factory.mktemp("w") / "tiny_x2.safetensors", **tiny_config("msrn"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.rglob("*.png")}


def _same_reasons(failed, out: Path):
    # The output folder, named as OUT; Pillow names the in-memory file it could not identify by its address,
    # which differs between processes.
    return [(src, re.sub(r"0x[0-9a-f]+", "0x?", reason.replace(str(out), "OUT"))) for src, reason in failed]


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path):
    from restorekit.distributed import INSTALL_HINT, run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RestorekitError, match=re.escape(INSTALL_HINT)):
        run_ray(MODEL, [tmp_path], tmp_path / "out")
    assert INSTALL_HINT == 'pip install "restorekit[ray]"'


def test_ray_options_need_the_ray_engine(cli, tmp_path, tiny_weights):
    write_images(tmp_path / "in", 1)
    proc = cli("run", MODEL, tmp_path / "in", "-o", tmp_path / "out", "--weights", tiny_weights, "--actors", "2")
    assert proc.returncode == 1 and "--engine ray" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_ray_writes_what_run_batch_writes(ray_cluster, tmp_path, tiny_weights):
    import ray

    from restorekit.distributed import run_ray

    src = tmp_path / "in"
    write_images(src, 3, [(24, 32), (17, 23), (30, 30)], grey=[1])
    write_images(src / "sub", 2, (20, 28), seed=1)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # the folder, one of its files again (the same output: refused), a pattern that matches nothing
    specs = [src, src / "img0.png", str(tmp_path / "none" / "*.png")]
    local = run_batch(runner(MODEL, weights=tiny_weights, device="cpu"), specs, tmp_path / "local", progress=False)
    report = run_ray(MODEL, specs, tmp_path / "ray", weights=tiny_weights, device="cpu", progress=False)
    assert ray.is_initialized(), "a Ray the caller started is left running"
    assert local.summary() == "5 written, 0 skipped (already there), 3 failed"
    assert report.summary() == local.summary()
    assert [p.relative_to(tmp_path / "ray") for p in report.written] == [
        p.relative_to(tmp_path / "local") for p in local.written
    ]
    assert _same_reasons(report.failed, tmp_path / "ray") == _same_reasons(local.failed, tmp_path / "local")
    assert [src for src, _ in report.failed] == [str(specs[2]), str(src / "broken.png"), str(src / "img0.png")]
    want, got = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(got) == ["img0.png", "img1.png", "img2.png", "sub/img0.png", "sub/img1.png"]
    assert got == want, "the same bytes as restorekit run, and no temporary file left"
    assert np.asarray(Image.open(tmp_path / "ray" / "img1.png")).shape == (34, 46), "grey stays grey"


@pytest.mark.slow
def test_a_model_that_cannot_load_on_the_actors_stops_the_run_with_its_error(ray_cluster, tmp_path, tiny_weights):
    from restorekit.distributed import run_ray

    write_images(tmp_path / "in", 2)
    bad = tmp_path / "not_weights.safetensors"
    bad.write_bytes(b"these are not weights")
    with pytest.raises(RestorekitError) as local:
        runner(MODEL, weights=bad, device="cpu")
    start = time.monotonic()
    with pytest.raises(type(local.value)) as remote:
        run_ray(MODEL, [tmp_path / "in"], tmp_path / "out", weights=bad, device="cpu", actors=1, progress=False)
    assert str(remote.value) == str(local.value)
    assert time.monotonic() - start < 60, "the error ends the run instead of Ray retrying the actor"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*")), "nothing is written"


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_finished_files(ray_cluster, tmp_path, cli):
    # Wide enough that each 96x96 image takes a noticeable time on one actor, so the kill lands mid-run.
    weights = _msrn_weights(tmp_path / "mid.safetensors", n_feats=32, n_blocks=4)
    src = tmp_path / "in"
    names = [f"img{i}.png" for i in range(8)]
    write_images(src, 8, (96, 96))
    out = tmp_path / "out"
    common = ["--weights", weights, "--device", "cpu", "--no-progress", "--engine", "ray"]
    # A driver in its own process joins the module's Ray, and is killed once a first output is there.
    cmd = [sys.executable, "-m", "restorekit", "run", MODEL, src, "-o", out, *common, "--actors", "1"]
    proc = subprocess.Popen(
        [str(c) for c in [*cmd, "--ray-address", ray_cluster]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and not list(out.glob("img*.png")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    # Ray ends the dead driver's actor; wait until nothing changes in the output folder any more.
    seen, still = None, 0.0
    while still < 2.0:
        now = sorted((p.name, p.stat().st_size) for p in out.iterdir())
        still = still + 0.25 if now == seen else 0.0
        seen = now
        time.sleep(0.25)
    done = sorted(p.name for p in out.glob("img*.png"))
    assert 1 <= len(done) < 8, done
    left = [n for n in names if n not in done]
    stale = out / f".{left[0]}.abc123.tmp.png"  # what a write cut short leaves
    stale.write_bytes(b"partial")
    stamps = _stamps(out)

    resumed = cli("run", MODEL, src, "-o", out, *common, check=0)
    assert f"{len(left)} written, {len(done)} skipped" in resumed.stdout
    assert sorted(p.name for p in out.iterdir()) == names, "every output, and no temporary file"
    assert all(_stamps(out)[n] == stamps[n] for n in done), "finished outputs are not redone"
    assert not stale.exists()
    local = cli("run", MODEL, src, "-o", tmp_path / "local", *common[:-2], check=0)
    assert "8 written" in local.stdout
    assert _files(out) == _files(tmp_path / "local"), "the resumed run's files are restorekit run's"
    # --overwrite redoes a finished file (the same bytes again)
    before = _files(out)["img0.png"]
    redo = cli("run", MODEL, src / "img0.png", "-o", out, *common, "--overwrite", check=0)
    assert "1 written, 0 skipped" in redo.stdout
    assert _stamps(out)["img0.png"] != stamps.get("img0.png") and _files(out)["img0.png"] == before


@pytest.fixture(scope="module")
def inpaint_weights(tmp_path_factory, tiny_config):
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


@pytest.mark.slow
def test_masks_are_found_as_restorekit_run_finds_them(ray_cluster, tmp_path, inpaint_weights, monkeypatch):
    from restorekit.distributed import run_ray

    monkeypatch.setenv("RESTOREKIT_SCAN_BACKEND", "reference")  # as the module's workers run it
    src = tmp_path / "in"
    write_images(src, 3)
    write_images(src / "sub", 1, seed=1)
    Image.open(src / "img2.png").convert("RGB").save(src / "photo.jpg")
    (src / "img2.png").unlink()
    masks = tmp_path / "masks"
    _mask_image(masks / "img0.png", 1)  # the same name
    _mask_image(masks / "sub" / "img0.png", 2)  # the same relative name
    _mask_image(masks / "photo.png", 3)  # the same stem, .png; img1.png has none
    model = "spatial_rnn.inpaint"
    # Two actors of one CPU (one torch thread) each: the same bytes as restorekit run on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_batch(
            runner(model, weights=inpaint_weights, device="cpu"), [src], tmp_path / "local", masks=masks, progress=False
        )
    finally:
        torch.set_num_threads(threads)
    report = run_ray(
        model, [src], tmp_path / "ray", weights=inpaint_weights, device="cpu", masks=masks, actors=2, progress=False
    )
    assert report.summary() == local.summary() == "3 written, 0 skipped (already there), 1 failed"
    assert report.failed == local.failed and "no mask for it" in report.failed[0][1]
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert sorted(_files(tmp_path / "ray")) == ["img0.png", "photo.jpg", "sub/img0.png"]


@pytest.mark.slow
def test_restore_dataset_equals_restorer_run_on_the_same_arrays(ray_cluster, tmp_path, tiny_weights):
    import ray.data

    from restorekit.distributed import restore_dataset
    from restorekit.restorer import Restorer

    write_images(tmp_path / "in", 3, [(24, 32), (17, 23), (30, 30)])
    ds = ray.data.read_images(str(tmp_path / "in"), include_paths=True)
    restored = restore_dataset(ds, MODEL, weights=tiny_weights, device="cpu", actors=1, output_column="restored")
    rows = sorted(restored.take_all(), key=lambda row: row["path"])
    assert len(rows) == 3
    r = Restorer(MODEL, weights=tiny_weights, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the actor of one CPU runs it
    try:
        wanted = [r.run(np.asarray(Image.open(row["path"]))) for row in rows]
    finally:
        torch.set_num_threads(threads)
    for row, want in zip(rows, wanted):
        image = np.asarray(Image.open(row["path"]))
        assert np.array_equal(row["image"], image), "the other columns pass through"
        assert row["restored"].dtype == want.dtype == np.uint8
        assert row["restored"].shape == (2 * image.shape[0], 2 * image.shape[1], 3)
        assert np.array_equal(row["restored"], want), row["path"]


@pytest.mark.slow
def test_actors_batch_images_of_one_size_as_restorekit_run_does(ray_cluster, tmp_path, tiny_weights):
    from restorekit.distributed import run_ray

    src = tmp_path / "in"
    write_images(src, 5, [(24, 32), (24, 32), (17, 23), (24, 32), (17, 23)])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    local = run_batch(runner(MODEL, weights=tiny_weights, device="cpu"), [src], tmp_path / "local", progress=False)
    batched = run_batch(
        runner(MODEL, weights=tiny_weights, device="cpu", batch=3), [src], tmp_path / "batched", progress=False
    )
    report = run_ray(MODEL, [src], tmp_path / "ray", weights=tiny_weights, device="cpu", progress=False, batch=3)
    assert report.summary() == batched.summary() == local.summary() == "5 written, 0 skipped (already there), 1 failed"
    assert _same_reasons(report.failed, tmp_path / "ray") == _same_reasons(local.failed, tmp_path / "local")
    for p in local.written:
        want = np.asarray(Image.open(p), dtype=np.int32)
        for other in (tmp_path / "ray" / p.name, tmp_path / "batched" / p.name):
            got = np.asarray(Image.open(other), dtype=np.int32)
            assert got.shape == want.shape and np.abs(got - want).max() <= 1, other
