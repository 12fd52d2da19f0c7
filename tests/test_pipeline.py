"""run_batch's decode/encode pipeline (``workers``): the same bytes and the same report as one file at a time."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorekit import Restorer
from restorekit.batch import run_batch
from restorekit.errors import InputError
from restorekit.registry import get_arch
from restorekit.weightfile import save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_config):
    import torch

    torch.manual_seed(0)
    config = {**get_arch("msrn").default_config, "scale": 2, **tiny_config("msrn")}
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(path, get_arch("msrn").build(**config).state_dict(), arch="msrn", config=config, name="msrn.sr_x2")
    return path


@pytest.fixture(scope="module")
def restorer(weights):
    return Restorer("msrn.sr_x2", weights=weights, device="cpu")


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(7):
        size = (20 + 4 * (i % 3), 28)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / "sub" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / "sub" / "q.jpg", quality=80)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


def _reasons(failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(src, re.sub(r"0x[0-9a-f]+", "0x", why)) for src, why in failed]  # Pillow names an object's address


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_pipelined_outputs_and_report_equal_one_at_a_time(restorer, tmp_path, workers):
    folder = _folder(tmp_path)
    serial = run_batch(restorer, [folder], tmp_path / "serial", progress=False, workers=0)
    piped = run_batch(restorer, [folder], tmp_path / "piped", progress=False, workers=workers)
    assert len(serial.written) == 9 and [src for src, _ in serial.failed] == [str(folder / "broken.png")]
    assert [p.relative_to(tmp_path / "piped") for p in piped.written] == [
        p.relative_to(tmp_path / "serial") for p in serial.written
    ]
    assert _reasons(piped.failed) == _reasons(serial.failed)
    assert _bytes(tmp_path / "piped") == _bytes(tmp_path / "serial")
    # what Restorer.run writes for one file is what the pipeline wrote
    restorer.run(folder / "3.png", tmp_path / "single.png")
    assert (tmp_path / "single.png").read_bytes() == (tmp_path / "piped" / "3.png").read_bytes()


def test_pipeline_skips_finished_files_and_leaves_no_temporaries(restorer, tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    first = run_batch(restorer, [folder / "0.png", folder / "1.png"], out, progress=False)
    stamp = (out / "0.png").stat().st_mtime_ns
    again = run_batch(restorer, [folder], out, progress=False)
    assert [p.name for p in again.skipped] == ["0.png", "1.png"] and len(first.written) == 2
    assert len(again.written) == 7 and (out / "0.png").stat().st_mtime_ns == stamp
    assert not list(out.rglob(".*tmp*"))


def test_a_failing_write_is_reported_and_the_run_goes_on(restorer, tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "grey.png").mkdir()  # a folder where the output file should go: that write fails
    report = run_batch(restorer, [folder], out, progress=False, overwrite=True, workers=2)
    reasons = dict(report.failed)
    assert str(folder / "sub" / "grey.png") in reasons and str(folder / "broken.png") in reasons
    assert len(report.written) == 8 and (out / "sub" / "q.jpg").is_file()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_workers_must_be_a_whole_number(restorer, tmp_path, bad):
    with pytest.raises(InputError, match="workers"):
        run_batch(restorer, [tmp_path], tmp_path / "out", progress=False, workers=bad)


def test_cli_workers_gives_the_same_files(weights, tmp_path, cli):
    folder = _folder(tmp_path)
    for w in ("0", "3"):
        done = cli("run", "msrn.sr_x2", str(folder), "-o", str(tmp_path / w), "--weights", str(weights), "--workers", w)
        assert done.returncode == 1 and "broken.png" in done.stderr  # that file fails, the rest is written
    assert _bytes(tmp_path / "0") == _bytes(tmp_path / "3") and len(_bytes(tmp_path / "3")) == 9


def test_an_interrupted_run_keeps_only_complete_files(restorer, tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    serial = run_batch(restorer, [folder], tmp_path / "serial", progress=False, workers=0)
    real, calls = restorer.restore_planar, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(restorer, "restore_planar", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(restorer, [folder], out, progress=False, workers=2)
    written = _bytes(out)
    expected = _bytes(tmp_path / "serial")
    assert 1 <= len(written) <= 3 and all(written[name] == expected[name] for name in written)
    monkeypatch.undo()
    resumed = run_batch(restorer, [folder], out, progress=False, workers=2)
    assert len(resumed.skipped) == len(written) and _bytes(out) == expected and len(serial.written) == 9


def test_the_default_workers_run_only_where_a_core_is_left_for_them(restorer):
    import os

    import torch

    from restorekit.batch import default_workers

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(os.cpu_count() or 1)  # torch on every core: the decoding would only compete
        assert default_workers(restorer) == 0
        if (os.cpu_count() or 1) > 1:
            torch.set_num_threads(1)  # a core left free
            assert default_workers(restorer) == 2
    finally:
        torch.set_num_threads(threads)

    class Batching:
        device = torch.device("cpu")
        batch = 4

    class OnGPU:
        device = torch.device("cuda")
        batch = 1

    assert default_workers(Batching()) >= 1, "a batching Restorer's workers gather its batch"
    assert default_workers(OnGPU()) == 2
