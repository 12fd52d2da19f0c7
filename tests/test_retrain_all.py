"""examples/retrain_all.py, every part on the CPU at tiny size: the lossless pack, unpacking, the L0 targets, five
concurrent time-budgeted trainings, export, evaluation and the eight files of the output folder."""

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "retrain_all.py"
MODELS = ("spatial_rnn.denoise", "spatial_rnn.smooth_l0", "spatial_rnn.inpaint", "spatial_rnn.colorize")
MODELS += ("dsrir.all_in_one",)


def _write(folder: Path, n: int, prefix: str, rng: np.random.RandomState, grey: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.rand(7, 8, 1 if grey else 3)
        img = np.kron(base, np.ones((8, 8, 1)))[:48, :56]
        arr = (img * 255).astype(np.uint8)
        Image.fromarray(arr[..., 0] if grey else arr).save(folder / f"{prefix}{i}.png")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared") / "data"
    rng = np.random.RandomState(0)
    _write(root / "train/BSD200", 3, "b", rng)
    _write(root / "train/T91", 2, "t", rng, grey=True)  # a grey image goes through the pack as grey
    _write(root / "denoise/CBSD68", 2, "c", rng)
    _write(root / "derain/Rain100L_3/target", 2, "r", rng)
    for p in (root / "derain/Rain100L_3/target").iterdir():  # rain: the target plus bright streaks
        arr = np.asarray(Image.open(p)).copy()
        arr[::5] = 255
        (root / "derain/Rain100L_3/input").mkdir(exist_ok=True)
        Image.fromarray(arr).save(root / "derain/Rain100L_3/input" / p.name)
    return root


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # The PyTorch reference scan: the native build (half a minute in a fresh cache) would eat the tiny budget.
    env = {**os.environ, "RESTOREKIT_SCAN_BACKEND": "reference"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow  # runs the script in a process
def test_pack_is_lossless_and_checked(data_root, tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import retrain_all
    finally:
        sys.path.remove(str(SCRIPT.parent))
    pack = tmp_path / "pack"
    proc = _script("pack", "--data", str(data_root), "-o", str(pack))
    assert proc.returncode == 0, proc.stderr
    assert "packed 11 images" in proc.stdout
    assert sorted(p.suffix for p in pack.rglob("*.*") if p.name != "manifest.json") == [".webp"] * 11
    back = tmp_path / "back"
    assert retrain_all.unpack(pack, back) == 11
    for p in data_root.rglob("*.png"):
        a, b = Image.open(p), Image.open(back / p.relative_to(data_root))
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b)), p
    again = _script("pack", "--data", str(data_root), "-o", str(pack))
    assert again.returncode != 0 and "not empty" in again.stderr  # never overwrites a pack
    victim = next(pack.rglob("*.webp"))  # a pack whose pixels changed is refused, not trained on
    img = np.asarray(Image.open(victim)).copy()
    img[0, 0] ^= 1
    Image.fromarray(img).save(victim, "WEBP", lossless=True)
    with pytest.raises(SystemExit, match="do not match the manifest"):
        retrain_all.unpack(pack, tmp_path / "back2")


@pytest.mark.slow
def test_run_trains_exports_and_measures_every_model(data_root, tmp_path):
    from restorekit import Restorer
    from restorekit.registry import get_record

    pack = tmp_path / "pack"
    assert _script("pack", "--data", str(data_root), "-o", str(pack)).returncode == 0
    out = tmp_path / "out"
    budget = 80.0
    t0 = time.monotonic()
    proc = _script(
        "run",
        "--pack",
        str(pack),
        "--out",
        str(out),
        "--budget",
        f"{budget:g}s",
        "--eval-reserve",
        "30s",
        "--device",
        "cpu",
        "--tiny",
        "--limit",
        "1",
        "--workers",
        "0",
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    weights = sorted(f"{m.replace('.', '_')}.safetensors" for m in MODELS)
    assert files == sorted([*weights, "summary.json", "report.md", "logs.tar.gz"])  # the eight files a GPU run returns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiny"] and summary["device"] == "cpu" and summary["scan_backend"]["mode"] == "reference"
    for name in MODELS:
        r = summary["models"][name]
        assert r["exit_code"] == 0 and r["steps"] >= 1, (name, r)
        restorer = Restorer(name, weights=out / r["weights"], device="cpu")
        assert restorer.record.name == get_record(name).name
        labels = {row["label"] for row in r["eval"]}
        full = {
            "spatial_rnn.denoise": ("CBSD68 sigma 15", "CBSD68 sigma 25", "CBSD68 sigma 50"),
            "spatial_rnn.smooth_l0": ("CBSD68 vs L0 lambda 0.02",),
            "spatial_rnn.inpaint": ("CBSD68 50% missing",),
            "spatial_rnn.colorize": ("CBSD68 3% colour hints",),
            "dsrir.all_in_one": (
                "CBSD68 sigma 15",
                "CBSD68 sigma 25",
                "CBSD68 sigma 50",
                "CBSD68 synthetic haze",
                "CBSD68 synthetic rain",
                "Rain100L (3 test pairs)",
            ),
        }[name]
        expected = {f"{label}, first 1 image" for label in full}  # --limit 1: each label says it is of a subset
        assert labels == expected, name
        for row in r["eval"]:
            assert np.isfinite(row["model_result"]["psnr"]) and row["model_result"]["images"] == 1
            shipped = {
                m.dataset: m.value for m in get_record(name).metrics if m.source == "measured" and m.metric == "psnr"
            }
            assert row["shipped_psnr"] == shipped.get(row["label"])
            if row["shipped_psnr"] is not None:
                assert row["better_than_shipped"] == (row["model_result"]["psnr"] > row["shipped_psnr"])
    # Each training ended within its share of the budget (its own --time-budget), and the whole command near its
    # budget: on two shared cores the evaluation of five models at once may run past the reserve.
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
        assert {f"{m}/log.jsonl" for m in MODELS} <= set(names)
        for m in MODELS:
            log = [json.loads(line) for line in tar.extractfile(f"{m}/log.jsonl").read().decode().splitlines()]
            assert any("export" in r for r in log), m
    assert wall < 3 * budget, wall
    report = (out / "report.md").read_text()
    assert all(m in report for m in MODELS)
