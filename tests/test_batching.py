"""Batching: images of one size through the network together (``Restorer(batch=N)``, ``--batch N``), equal to one
at a time to float rounding, bounded by memory, split when it runs out, refused where it cannot apply."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import Restorer, policy, registry
from restorekit.batch import run_batch
from restorekit.errors import InputError
from restorekit.image import Planar
from restorekit.registry import get_arch

RECORDS = ["msrn.sr_x2", "memnet.denoise_s50", "mprnet.deblur", "dsrir.all_in_one", "spatial_rnn.denoise"]


def _pair(rec, batch: int) -> tuple[Restorer, Restorer]:
    """One-at-a-time and batching Restorers of the same (random) weights."""
    with registry.temporary(None, rec):
        one = Restorer(rec.name, pretrained=False, device="cpu", batch=1)
        many = Restorer(rec.name, pretrained=False, device="cpu", batch=batch)
    many.model.load_state_dict(one.model.state_dict())
    return one, many


def _count_calls(r: Restorer) -> list[int]:
    """The batch size of every network call ``r`` makes from now on."""
    sizes: list[int] = []
    r.model.register_forward_pre_hook(lambda _module, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("name", RECORDS)
def test_a_batch_equals_one_at_a_time_on_every_architecture(name, tiny_record):
    rec = tiny_record(name)
    one, many = _pair(rec, batch=3)
    calls_one, calls_many = _count_calls(one), _count_calls(many)
    x = torch.rand(3, rec.in_channels, 20, 18, generator=torch.Generator().manual_seed(0))
    want, got = one.run(x), many.run(x)
    assert calls_one == [1, 1, 1] and calls_many == [3], "the batch went through the network in one call"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_default_is_the_measured_policy_one_image_per_call_on_the_cpu(tiny_record):
    # bench_pipeline.py --batch measured every batch slower than one at a time on the CPU (docs/performance.md)
    for name in RECORDS:
        spec = get_arch(tiny_record(name).arch)
        assert spec.policy.cpu.batch == 1, spec.name
    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu")
    assert r.batch == 1 and "batch" not in repr(r)
    calls = _count_calls(r)
    r.run(torch.rand(2, 3, 8, 8))
    assert calls == [1, 1]


@pytest.mark.parametrize("value", [0, -2, True, "8", 2.0, None])
def test_batch_values_are_checked(value, tiny_record):
    rec = tiny_record("msrn.sr_x2")
    with registry.temporary(None, rec), pytest.raises(InputError, match="batch must be 'auto'"):
        Restorer(rec.name, pretrained=False, device="cpu", batch=value)
    with pytest.raises(ValueError, match="batch must be a whole number"):
        policy.InferencePolicy(batch=0)
    assert "batches of up to 4" in policy.InferencePolicy(batch=4).describe()


def test_the_memory_budget_bounds_the_batch(tiny_record, monkeypatch):
    rec = tiny_record("msrn.sr_x2")
    _, many = _pair(rec, batch=8)
    side = 16 + 2 * many.context  # what the network is given: the image with its mirrored context
    per_image = many._footprint() * side * side
    assert many._footprint() >= get_arch(rec.arch).footprint_for(rec.config)
    # half the free memory holds 3 such images: 8 images go as 3 + 3 + 2
    monkeypatch.setattr("restorekit.restorer.free_memory", lambda device: int(2 * 3.5 * per_image))
    assert many._batch_for(side, side) == 3
    calls = _count_calls(many)
    many.tile = None  # whole images: the budget bounds only the batch here
    many.run(torch.rand(8, 3, 16, 16))
    assert calls == [3, 3, 2]


def test_a_batch_that_runs_out_of_memory_is_split(tiny_record):
    rec = tiny_record("msrn.sr_x2")
    one, many = _pair(rec, batch=4)
    want = one.run(torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(2)))
    sizes: list[int] = []

    def refuse_big(_module, args):
        sizes.append(args[0].shape[0])
        if args[0].shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")

    many.model.register_forward_pre_hook(refuse_big)
    with pytest.warns(RuntimeWarning, match=r"with a batch of \d; retrying in halves"):
        got = many.run(torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(2)))
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_run_on_a_list_groups_images_of_one_size_and_keeps_the_order(tiny_record, tmp_path):
    rec = tiny_record("msrn.sr_x2")
    one, many = _pair(rec, batch=4)
    rng = np.random.default_rng(0)
    sizes = [(12, 10), (16, 10), (12, 10), (12, 10), (16, 10), (12, 10), (12, 10)]
    arrays = [rng.random((*hw, 3), dtype=np.float32) for hw in sizes]
    paths = []
    for i, hw in enumerate([(12, 10), (20, 8), (12, 10)]):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(paths[-1])
    items = [*arrays[:3], torch.rand(3, 12, 10), *paths, *arrays[3:]]
    calls = _count_calls(many)
    got = many.run(items)
    want = one.run(items)
    # the window before the tensor: three arrays of two sizes; the tensor alone; then 3 paths and 4 arrays of three
    # sizes, five of one (a batch of 4, then 1)
    assert calls == [2, 1, 1, 4, 1, 1, 1], calls
    assert [type(g) for g in got] == [type(w) for w in want]
    for g, w in zip(got, want):
        g, w = (np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64))
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= (1.0 if w.max() > 1 else 1e-5)  # 8-bit files: at most one level


def test_a_bad_input_in_a_batched_list_is_raised_after_the_ones_before_it_are_written(tiny_record, tmp_path):
    rec = tiny_record("msrn.sr_x2")
    _, many = _pair(rec, batch=4)
    rng = np.random.default_rng(1)
    good = []
    for i in range(2):
        good.append(tmp_path / "in" / f"g{i}.png")
        good[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(good[-1])
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(Exception, match="broken.png|cannot identify"):
        many.run([*good, broken, good[0].with_name("later.png")], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g0.png", "g1.png"]


def test_restore_planars_returns_each_failure_in_its_place(tiny_record):
    rec = tiny_record("msrn.sr_x2")
    _, many = _pair(rec, batch=4)
    fine = read_image_array(np.zeros((8, 8, 3), np.uint8))
    wrong = read_image_array(np.zeros((8, 8, 3), np.float32) + 7)  # float outside [0, 1]
    out = many.restore_planars([fine, wrong, fine], errors="return")
    assert isinstance(out[1], InputError) and isinstance(out[0], Planar) and isinstance(out[2], Planar)
    assert out[0].color.shape == out[2].color.shape == (3, 16, 16)
    with pytest.raises(InputError, match="float values"):
        many.restore_planars([fine, wrong])
    with pytest.raises(InputError, match="errors must be"):
        many.restore_planars([fine], errors="ignore")


def read_image_array(array: np.ndarray):
    from restorekit.image import numpy_to_planar

    return numpy_to_planar(array)


def _mixed_folder(root: Path) -> Path:
    rng = np.random.default_rng(3)
    folder = root / "in"
    folder.mkdir()
    for i in range(9):
        size = (16, 12) if i % 3 else (12, 16)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 12), dtype=np.uint8)).save(folder / "grey.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batched_folder_run_reports_and_writes_as_one_at_a_time(tiny_record, tmp_path, workers):
    rec = tiny_record("msrn.sr_x2")
    one, many = _pair(rec, batch=4)
    folder = _mixed_folder(tmp_path)
    serial = run_batch(one, [folder], tmp_path / "serial", progress=False, workers=0)
    calls = _count_calls(many)
    batched = run_batch(many, [folder], tmp_path / "batched", progress=False, workers=workers)
    assert batched.summary() == serial.summary() == "10 written, 0 skipped (already there), 1 failed"
    assert [p.name for p in batched.written] == [p.name for p in serial.written], "the input order"
    strip = [(s, re.sub(r"0x[0-9a-f]+", "0x", w)) for s, w in serial.failed]
    assert [(s, re.sub(r"0x[0-9a-f]+", "0x", w)) for s, w in batched.failed] == strip
    assert max(calls) > 1 and sum(calls) == 10, calls
    for p in serial.written:
        a = np.asarray(Image.open(p), dtype=np.int32)
        b = np.asarray(Image.open(tmp_path / "batched" / p.name), dtype=np.int32)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, p.name


def test_a_folder_batch_needs_the_decoding_workers(tiny_record, tmp_path):
    rec = tiny_record("msrn.sr_x2")
    _, many = _pair(rec, batch=4)
    folder = _mixed_folder(tmp_path)
    with pytest.raises(InputError, match="workers >= 1"):
        run_batch(many, [folder], tmp_path / "out", progress=False, workers=0)
    assert not (tmp_path / "out").exists()


def test_the_cli_batches_and_refuses_what_cannot_batch(cli, tmp_path, tiny_record):
    from restorekit.weightfile import save_weights

    torch.manual_seed(0)
    rec = tiny_record("msrn.sr_x2")
    weights = tmp_path / "w.safetensors"
    config = dict(rec.config)
    save_weights(weights, get_arch("msrn").build(**config).state_dict(), arch="msrn", config=config, name="msrn.sr_x2")
    folder = _mixed_folder(tmp_path)
    (folder / "broken.png").unlink()
    proc = cli("run", "msrn.sr_x2", folder, "-o", tmp_path / "out", "--weights", weights, "--batch", "4")
    assert proc.returncode == 0, proc.stderr
    assert "10 written" in proc.stdout
    local = run_batch(Restorer("msrn.sr_x2", weights=weights, device="cpu"), [folder], tmp_path / "one", progress=False)
    assert len(local.written) == 10
    for p in local.written:
        a = np.asarray(Image.open(p), dtype=np.int32)
        b = np.asarray(Image.open(tmp_path / "out" / p.name), dtype=np.int32)
        assert np.abs(a - b).max() <= 1
    for args, message in [
        (("msrn.sr_x2", "--batch", "0"), "--batch takes 'auto' or a whole number"),
        (("bicubic", "--scale", "2", "--batch", "2"), "--batch"),
        (("auto", "--batch", "2"), "one image at a time"),
        (("msrn.sr_x2", "--weights", str(weights), "--batch", "2", "--workers", "0"), "workers >= 1"),
    ]:
        proc = cli("run", args[0], folder, "-o", tmp_path / "refused", *args[1:])
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "refused").exists()


def test_the_bundled_denoiser_batched_is_within_a_level_of_one_at_a_time():
    from restorekit.image import planar_to_numpy

    one = Restorer("spatial_rnn.denoise", device="cpu", batch=1)
    many = Restorer("spatial_rnn.denoise", device="cpu", batch=4)
    rng = np.random.default_rng(4)
    base = rng.integers(60, 200, (32, 32, 3)).astype(np.float64)
    noisy = [np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    planars = [read_image_array(x) for x in noisy]
    calls = _count_calls(many)
    got = [planar_to_numpy(p) for p in many.restore_planars(planars)]
    want = [planar_to_numpy(one.restore_planar(p)) for p in planars]
    assert calls == [4]
    for g, w in zip(got, want):
        assert g.dtype == np.uint8 and np.abs(g.astype(int) - w).max() <= 1


def test_each_image_of_a_batch_keeps_its_own_alpha(tiny_record):
    from restorekit.image import numpy_to_planar

    rec = tiny_record("msrn.sr_x2")
    one, many = _pair(rec, batch=3)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (9, 7, 4), dtype=np.uint8) for _ in range(2)] + [
        rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    ]
    planars = [numpy_to_planar(x) for x in images]
    got = many.restore_planars(planars)
    for g, p in zip(got, planars):
        w = one.restore_planar(p)
        assert (g.alpha is None) == (w.alpha is None) == (p.alpha is None)
        if w.alpha is not None:
            assert torch.equal(g.alpha, w.alpha) and g.alpha.shape == (1, 18, 14)
        torch.testing.assert_close(g.color, w.color, rtol=1e-5, atol=1e-5)
