"""Upstream files without a published digest (PaddleGAN's MPRNet): refused by default, trusted on first
use only when asked, the download's sha256 logged and kept; the license notice shown once per process.

Served by the real local file server (tests/servers.py), in PaddleGAN's .pdparams layout."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import registry, weights
from restorekit.archs.mprnet import CAB, LICENSE_NOTICE, MPRNet
from restorekit.errors import WeightsNotAvailableError
from restorekit.registry import UrlSource, WeightRecord, get_record
from restorekit.weights import load_model, read_weights, resolve


def pdparams(net: MPRNet) -> bytes:
    sd = {k: v.numpy().copy() for k, v in net.state_dict().items() if k != "act.weight"}
    for name, module in net.named_modules():
        if isinstance(module, CAB):
            sd[f"{name}.body.1._weight"] = net.act.weight.detach().numpy().copy()
    return pickle.dumps(sd, protocol=4)


@pytest.fixture
def served(file_server, tiny_config, tiny_model):
    torch.manual_seed(0)
    net = tiny_model("mprnet").eval()
    data = pdparams(net)
    url = file_server.add("/models/MPR_Deblurring.pdparams", data)
    base = get_record("mprnet.deblur")
    rec = dataclasses.replace(
        base,
        tag="tofu_test",
        default=False,
        config=tiny_config("mprnet"),
        hub=None,
        upstream=UrlSource(url=url, format="paddle", pinned=False),
    )
    with registry.temporary(None, rec):
        yield rec, net, data, file_server


def test_refused_by_default_with_the_way_to_opt_in(served, monkeypatch):
    rec, _, _, server = served
    monkeypatch.delenv("RESTOREKIT_ALLOW_UNPINNED", raising=False)
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    assert "publishes no checksum" in message and rec.upstream.url in message
    assert "RESTOREKIT_ALLOW_UNPINNED=1" in message and "allow_unpinned=True" in message
    assert f"restorekit convert FILE tofu_test.safetensors --model {rec.name}" in message
    assert server.requests == [], "nothing may be downloaded before the user opts in"
    monkeypatch.setenv("RESTOREKIT_ALLOW_UNPINNED", "0")
    with pytest.raises(WeightsNotAvailableError):
        resolve(rec, progress=False)
    with pytest.raises(WeightsNotAvailableError):
        resolve(rec, progress=False, allow_unpinned=False)
    assert server.requests == []


@pytest.mark.parametrize("how", ["env", "argument"])
def test_trust_on_first_use_records_the_download(served, monkeypatch, caplog, how):
    rec, net, data, server = served
    if how == "env":
        monkeypatch.setenv("RESTOREKIT_ALLOW_UNPINNED", "1")
    kwargs = {"allow_unpinned": True} if how == "argument" else {}
    source_sha = hashlib.sha256(data).hexdigest()
    with caplog.at_level(logging.WARNING, logger="restorekit"):
        path = resolve(rec, progress=False, **kwargs)
    assert path.name == f"{rec.name}-unpinned.safetensors"
    assert any(source_sha in r.getMessage() and "trusting it on first use" in r.getMessage() for r in caplog.records)
    sidecar = path.with_name(path.name + ".sha256").read_text()
    assert sidecar.split()[0] == weights.sha256_file(path)
    assert f"# source {rec.upstream.url} sha256 {source_sha}" in sidecar
    sd, header = read_weights(path)
    assert header["arch"] == "mprnet" and set(sd) == set(net.state_dict())
    assert torch.equal(sd["act.weight"], net.act.weight.detach())
    # Trust was granted once: the converted copy is used later without opting in again, and without a request.
    monkeypatch.delenv("RESTOREKIT_ALLOW_UNPINNED", raising=False)
    server.clear_log()
    assert resolve(rec, progress=False) == path
    assert server.requests == []


def test_license_notice_once_per_process(served, monkeypatch):
    rec, net, _, _ = served
    monkeypatch.setenv("RESTOREKIT_ALLOW_UNPINNED", "1")
    monkeypatch.setattr(weights, "_NOTICED", set())
    with pytest.warns(UserWarning, match="non-commercial") as seen:
        model = load_model(rec.name)
    assert [str(w.message) for w in seen] == [f"{rec.name}: {LICENSE_NOTICE}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second notice would fail here
        load_model(rec.name)
        load_model(rec.name, pretrained=False)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(model(x)[0], net(x)[0])
    info = registry.model_info(rec.name, as_dict=True)
    assert "non-commercial" in info["license"] and info["license_notice"] == LICENSE_NOTICE


def test_real_records_are_unpinned_paddlegan_files():
    for tag, stem in (("deblur", "Deblurring"), ("denoise", "Denoising"), ("derain", "Deraining")):
        up = get_record(f"mprnet.{tag}").upstream
        assert up is not None and not up.pinned and up.format == "paddle"
        assert up.url == f"https://paddlegan.bj.bcebos.com/models/MPR_{stem}.pdparams"
        assert up.sha256 is None and up.git_blob_sha1 is None  # none is published; none is invented


def test_pinned_flag_is_validated():
    base = dict(arch="mprnet", tag="v", task="deblur", description="d")
    with pytest.raises(ValueError, match="pinned=False when the upstream publishes none"):
        WeightRecord(**base, upstream=UrlSource("http://127.0.0.1/x.pdparams", format="paddle"))
    with pytest.raises(ValueError, match="drop pinned=False"):
        WeightRecord(**base, upstream=UrlSource("http://127.0.0.1/x.pt", sha256="a" * 64, pinned=False))
    WeightRecord(**base, upstream=UrlSource("http://127.0.0.1/x.pdparams", format="paddle", pinned=False))


# ------------------------------------------------------------------ one set of options for every entry point


def _entry_points(tmp_path):
    """Each entry point that fetches weights, as a call taking the shared keywords."""
    from restorekit import Restorer
    from restorekit.cli import main
    from restorekit.evaluate import evaluate

    data = tmp_path / "bench"
    for sub in ("input", "target"):
        (data / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(data / sub / "a.png")

    def cli(*argv: str):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([*argv])
        sys.stderr.write(err.getvalue())  # for capsys
        if code != 0:
            raise WeightsNotAvailableError(f"restorekit {' '.join(argv)} exited with {code}: {err.getvalue()}")

    def flags(allow_unpinned=None, progress=None):
        out = [] if allow_unpinned is None else ["--allow-unpinned" if allow_unpinned else "--no-allow-unpinned"]
        return out + ([] if progress is None else ["--progress" if progress else "--no-progress"])

    return {
        "resolve": lambda rec, **kw: resolve(rec, **kw),
        "load_model": lambda rec, **kw: load_model(rec.name, device="cpu", **kw),
        "Restorer": lambda rec, **kw: Restorer(rec.name, device="cpu", **kw),
        "evaluate": lambda rec, **kw: evaluate(rec.name, data, device="cpu", **kw),
        "cli download": lambda rec, **kw: cli("download", rec.name, *flags(**kw)),
        "cli run": lambda rec, **kw: cli(
            "run", rec.name, str(data / "input"), "-o", str(tmp_path / "out"), *flags(**kw)
        ),
        "cli eval": lambda rec, **kw: cli("eval", rec.name, "--data", str(data), *flags(**kw)),
    }


ENTRY_POINTS = ["resolve", "load_model", "Restorer", "evaluate", "cli download", "cli run", "cli eval"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_takes_allow_unpinned(served, monkeypatch, tmp_path, entry):
    rec, _, _, server = served
    call = _entry_points(tmp_path)[entry]
    monkeypatch.setattr(weights, "_NOTICED", {rec.name})  # the license notice has its own test
    monkeypatch.setenv("RESTOREKIT_ALLOW_UNPINNED", "1")
    with pytest.raises(WeightsNotAvailableError, match="publishes no checksum"):  # False wins over the environment
        call(rec, allow_unpinned=False, progress=False)
    assert server.requests == []
    monkeypatch.delenv("RESTOREKIT_ALLOW_UNPINNED")
    with pytest.raises(WeightsNotAvailableError, match="publishes no checksum"):  # unset: the environment says no
        call(rec, progress=False)
    assert server.requests == []
    call(rec, allow_unpinned=True, progress=False)
    assert [path for _, path in server.requests] == ["/models/MPR_Deblurring.pdparams"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_progress_means_the_download_bar_too_everywhere(served, monkeypatch, tmp_path, capsys, entry):
    rec, _, _, server = served
    call = _entry_points(tmp_path)[entry]
    monkeypatch.setattr(weights, "_NOTICED", {rec.name})
    call(rec, allow_unpinned=True, progress=False)
    assert rec.name not in capsys.readouterr().err
    weights.cache_dir().joinpath("converted").rename(tmp_path / "old")  # fetch again
    call(rec, allow_unpinned=True)  # None: bars only on a terminal, and captured stderr is not one
    assert rec.name not in capsys.readouterr().err
    weights.cache_dir().joinpath("converted").rename(tmp_path / "older")
    call(rec, allow_unpinned=True, progress=True)
    err = capsys.readouterr().err
    assert f"{rec.name}:" in err and "B/s" in err, err  # tqdm's download bar: "name: 100%|...| 12.3kB/s"
    assert len([path for _, path in server.requests if path.endswith(".pdparams")]) == 3
