"""The schema of every weight record: one literal, named row per model in its architecture file, metric conventions
that restorekit.metrics knows, and sources that are real (no hub entry without a commit, no digest left out where
the upstream publishes one)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from restorekit import metrics, registry
from restorekit.errors import InputError
from restorekit.registry import CONVENTIONS, HubSource, Metric, WeightRecord, get_record, list_models, psnr_ssim

NAMES = list_models()
BUNDLED_DIR = Path(registry.__file__).parent / "weights"


def _source(arch: str) -> str:
    return inspect.getsource(importlib.import_module(f"restorekit.archs.{arch}"))


@pytest.mark.parametrize("arch", registry.list_archs())
def test_each_model_is_one_literal_row_in_its_arch_file(arch):
    source = _source(arch)
    names = list_models(arch=arch)
    rows = re.findall(r'WeightRecord\.named\(\s*"([^"]+)"', source)
    assert sorted(rows) == names, f"{arch}: rows {rows} vs registered {names}"  # one row per model, no generator
    assert "WeightRecord(" not in source  # every record is a WeightRecord.named row
    assert "psnr_ssim(" in source or not any(get_record(n).metrics for n in names)  # tables through the one helper


@pytest.mark.parametrize("name", NAMES)
def test_record_schema(name):
    rec = get_record(name)
    for m in rec.metrics:
        assert m.convention in CONVENTIONS and metrics.get_convention(m.convention, rec.scale).name == m.convention
        assert m.metric in ("psnr", "ssim") and m.source in ("measured", "reported"), m
    if rec.hub is not None:
        assert rec.hub.published and re.fullmatch(r"[0-9a-f]{40}", rec.hub.revision or ""), rec.hub
    if rec.bundled is not None:
        path = BUNDLED_DIR / rec.bundled.filename
        assert path.is_file() and path.stat().st_size == rec.bundled.size, path
    if rec.upstream is not None and not rec.upstream.pinned:
        assert "RESTOREKIT_ALLOW_UNPINNED" in rec.notes, "an unpinned download says how to opt in"
    if not rec.published:
        assert rec.source == "none (random init only)" and "not published yet" in rec.notes
    assert rec.description and rec.license != "unknown" and rec.paper and rec.origin


def test_conventions_are_the_ones_metrics_implements():
    assert set(CONVENTIONS) == set(metrics._PRESETS)
    for name in CONVENTIONS:
        assert metrics.get_convention(name, 2).name == name
        Metric("Set5", "psnr", 30.0, name)  # accepted
    for option in registry.CONVENTION_OPTIONS:
        assert metrics.get_convention(f"y_shave_scale:{option}", 2).grey == option
        Metric("Set5", "psnr", 30.0, f"y_shave_scale:{option}")


@pytest.mark.parametrize("bad,hint", [("y_ful", "Did you mean 'y_full'"), ("rgb", "full_image"), ("y_full:x", "")])
def test_unknown_convention_is_refused_with_a_suggestion(bad, hint):
    with pytest.raises(ValueError, match="unknown metric convention") as info:
        Metric("Set5", "psnr", 30.0, bad)
    assert hint in str(info.value)
    with pytest.raises(InputError, match="unknown metric convention"):
        metrics.get_convention(bad)  # metrics refuses the same names


def test_a_hub_source_needs_its_commit_and_digest():
    base = dict(arch="msrn", tag="t", task="sr", description="x")
    for hub in (HubSource("a/b", "f.safetensors"), HubSource("a/b", "f.safetensors", revision="0" * 40)):
        with pytest.raises(ValueError, match="hub=None"):
            WeightRecord(**base, hub=hub)
    pinned = HubSource("a/b", "f.safetensors", revision="0" * 40, sha256="0" * 64)
    assert WeightRecord(**base, hub=pinned).source == "hub"


def test_named_rows_and_the_metrics_table():
    rec = WeightRecord.named("msrn.t", task="sr", description="x")
    assert (rec.arch, rec.tag, rec.name) == ("msrn", "t", "msrn.t")
    for bad in ("msrn", "msrn.", ".t", "msrn.a.b"):
        with pytest.raises(ValueError, match="arch.tag"):
            WeightRecord.named(bad, task="sr", description="x")
    table = psnr_ssim("y_full", ("Classic5", 29.69), ("LIVE1", 29.45, 0.85))
    assert table == (
        Metric("Classic5", "psnr", 29.69, "y_full", "reported"),
        Metric("LIVE1", "psnr", 29.45, "y_full", "reported"),
        Metric("LIVE1", "ssim", 0.85, "y_full", "reported"),
    )
    assert {m.source for m in psnr_ssim("full_image", ("x", 1.0, 0.5), source="measured")} == {"measured"}
    with pytest.raises(ValueError, match="a row is"):
        psnr_ssim("full_image", ("x",))
