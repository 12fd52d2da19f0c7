"""The weights bundled in the package: digests, the wheel's contents, and the README main job offline.

The last test builds the wheel, installs it (no dependencies, no index) into a fresh virtual environment
that borrows the running interpreter's site-packages only for the dependencies, and runs the README's main job
(`python examples/quickstart.py`) from an empty folder with an empty cache, the hub client offline and
every proxy pointing at a closed port: it has to restore the sample with the bundled weights alone, with the
default model and with DSRIR.
"""

from __future__ import annotations

import hashlib
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorekit.registry import get_record, list_models
from restorekit.weights import BUNDLED_DIR, resolve

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = [get_record(n) for n in list_models() if get_record(n).bundled is not None]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_restorekit_trained_models_are_bundled_and_each_arch_has_a_default():
    assert {r.name for r in BUNDLED} >= {
        "spatial_rnn.denoise",
        "spatial_rnn.smooth_l0",
        "spatial_rnn.inpaint",
        "spatial_rnn.colorize",
        "dsrir.all_in_one",
        "dsrir.denoise",
        "dsrir.derain",
        "dsrir.dehaze",
    }
    assert get_record("spatial_rnn").name == "spatial_rnn.denoise"
    assert get_record("dsrir").name == "dsrir.all_in_one"


@pytest.mark.parametrize("record", BUNDLED, ids=lambda r: r.name)
def test_bundled_file_matches_its_record(record, tmp_path, monkeypatch):
    path = BUNDLED_DIR / record.bundled.filename
    data = path.read_bytes()
    assert len(data) == record.bundled.size and _sha256(data) == record.bundled.sha256
    # Resolved offline with an empty cache, straight from the package.
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve(record, progress=False) == path
    assert any(m.source == "measured" for m in record.metrics), "bundled weights must carry measured metrics"
    assert "restorekit-train" in record.origin and record.license.startswith("MIT")


@pytest.mark.slow  # builds a wheel
def test_the_wheel_carries_the_weights(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("restorekit/weights/") and n.endswith(".safetensors")}
        assert shipped == {f"restorekit/weights/{r.bundled.filename}" for r in BUNDLED}, "only recorded files ship"
        for record in BUNDLED:
            data = zf.read(f"restorekit/weights/{record.bundled.filename}")
            assert _sha256(data) == record.bundled.sha256, record.name


def _build_wheel(tmp_path: Path) -> Path:
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out)]
        + [str(ROOT)],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = out.glob("restorekit-*.whl")
    return wheel


@pytest.mark.slow
def test_readme_main_job_in_a_fresh_venv_without_network(tmp_path):
    wheel = _build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # The dependencies (torch, numpy, ...) come from the interpreter running the tests, which is itself usually a
    # virtual environment: system_site_packages would reach the *base* interpreter's packages instead, without
    # torch. A .pth file appends these folders after the new environment's own site-packages, so the wheel
    # installed there is what imports; the folders' own .pth files (an editable install of restorekit) are not run.
    borrowed = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    (new_site,) = {p.resolve() for p in env_dir.glob("lib*/python*/site-packages")}  # lib64 may link to lib
    (new_site / "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    offline = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)},
        "RESTOREKIT_CACHE": str(tmp_path / "empty-cache"),
        "HF_HOME": str(tmp_path / "empty-hf"),
        "HF_HUB_OFFLINE": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    # The wheel alone, nothing fetched: its dependencies come from this interpreter's site-packages.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=offline,
    )
    where = subprocess.run(
        [str(py), "-c", "import restorekit, sys; print(restorekit.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=offline,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"restorekit imported from {where}, not the fresh venv"
    work = tmp_path / "job"
    work.mkdir()
    clean = np.asarray(Image.open(ROOT / "examples" / "sample.png"), dtype=np.float64)
    noisy = np.asarray(Image.open(ROOT / "examples" / "noisy_sample.png"), dtype=np.float64)

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((a - clean) ** 2)))

    # The main job (the default, spatial_rnn.denoise), then the other bundled network, the all-in-one DSRIR.
    for args, written in (([], "noisy_sample_spatial_rnn_denoise.png"), (["dsrir"], "noisy_sample_dsrir.png")):
        done = subprocess.run(
            [str(py), str(ROOT / "examples" / "quickstart.py"), *args],
            capture_output=True,
            text=True,
            env=offline,
            cwd=work,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        restored = np.asarray(Image.open(work / written), dtype=np.float64)
        assert restored.shape == clean.shape
        assert psnr(restored) > psnr(noisy) + 3, (args, psnr(noisy), psnr(restored))
    assert sorted(p.name for p in work.iterdir()) == ["noisy_sample_dsrir.png", "noisy_sample_spatial_rnn_denoise.png"]
    assert not list((tmp_path / "empty-cache").rglob("*.safetensors")), "nothing should be downloaded or cached"


# ------------------------------------------------------------------ the acceptance figures, on real images

_ACCEPT = [  # (model, degradation, target filter, baseline, margin in dB the model must win by)
    # Measured on these 4 images: +9.4 (denoise; the issue asks > 3), +2.86, +2.74, +1.90 dB.
    ("spatial_rnn.denoise", "noise:25", None, "identity", 3.0),
    ("spatial_rnn.smooth_l0", None, "l0smooth:0.02", "identity", 2.0),
    ("spatial_rnn.inpaint", "mask:0.5", None, "nearest", 2.0),
    ("spatial_rnn.colorize", "hints:0.03", None, "identity", 1.0),
]


@pytest.fixture(scope="module")
def cbsd_subset(tmp_path_factory):
    """The first 4 CBSD68 images (seeded degradations are per file name, so these are the full set's)."""
    from . import shared_data

    src = shared_data.require("denoise", "CBSD68")
    out = tmp_path_factory.mktemp("cbsd4")
    for p in sorted(src.glob("*.png"))[:4]:
        (out / p.name).symlink_to(p)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model, deg, target, baseline, margin", _ACCEPT, ids=[a[0] for a in _ACCEPT])
def test_bundled_models_beat_their_trivial_baselines(cbsd_subset, model, deg, target, baseline, margin):
    from restorekit.evaluate import evaluate

    ours = evaluate(model, cbsd_subset, degradation=deg, target=target, progress=False)
    base = evaluate(baseline, cbsd_subset, degradation=deg, target=target, progress=False)
    assert ours.psnr > base.psnr + margin, (ours.psnr, base.psnr)


# DSRIR is slower (about 10 s a CBSD68 image on 2 cores): two images per degradation, the training's kinds.
_ACCEPT_DSRIR = [  # (degradation, convention, margin in dB over the degraded input)
    # Measured on these two images with the shipped file: +7.86 (28.03 dB), +7.59, +6.01 dB.
    ("noise:25", "full_image", 6.0),
    ("haze", "full_image", 5.0),
    ("rain", "y_full", 3.0),
]


@pytest.fixture(scope="module")
def cbsd2(cbsd_subset, tmp_path_factory):
    two = tmp_path_factory.mktemp("cbsd2")
    for p in sorted(cbsd_subset.glob("*.png"))[:2]:
        (two / p.name).symlink_to(p.resolve())
    return two


@pytest.mark.slow
@pytest.mark.parametrize("deg, convention, margin", _ACCEPT_DSRIR, ids=[a[0] for a in _ACCEPT_DSRIR])
def test_bundled_dsrir_restores_noise_haze_and_rain(cbsd2, deg, convention, margin):
    from restorekit.evaluate import evaluate

    data = cbsd2
    ours = evaluate("dsrir", data, degradation=deg, convention=convention, progress=False)
    base = evaluate("identity", data, degradation=deg, convention=convention, progress=False)
    assert len(ours.images) == len(base.images) > 0
    assert ours.psnr > base.psnr + margin, (ours.psnr, base.psnr)


@pytest.mark.slow
def test_the_recorded_denoising_figure_is_reproduced_on_all_of_cbsd68():
    from restorekit.evaluate import evaluate

    from . import shared_data

    record = get_record("spatial_rnn.denoise")
    recorded = next(m for m in record.metrics if m.dataset == "CBSD68 sigma 25" and m.metric == "psnr")
    result = evaluate(record.name, shared_data.require("denoise", "CBSD68"), degradation="noise:25", progress=False)
    assert len(result.images) == 68
    assert result.psnr == pytest.approx(recorded.value, abs=0.006)
