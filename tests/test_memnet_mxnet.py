"""The authors' MemNet models as MXNet files: graph-exact conversion, pinned downloads, colour policy, Restorer.

The ``.params`` files are made here in the authors' exact layout (every array the real graph names, float32,
Caffe's shared copies equal) from random values; the graphs are the real ones (``../shared/data/mxnet``).
A small interpreter of those graphs (``tests/memnet_graphs.py``) is the reference restorekit's network is
compared with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from restorekit import registry
from restorekit.archs.memnet import MemNetOutput
from restorekit.cli import main
from restorekit.errors import ChecksumError, ConversionError, WeightsNotAvailableError
from restorekit.registry import get_arch, get_record, list_models
from restorekit.restorer import Restorer
from restorekit.weights import _converted_path, git_blob_sha1_file, load_model, read_checkpoint, read_weights, resolve

try:
    from .memnet_graphs import OFFICIAL, graph_output, load_graph, official_params
    from .mxnet_files import encode_params, write_params
    from .shared_data import DATA, one_thread, require
except ImportError:  # tests/ as a plain folder on sys.path
    from memnet_graphs import OFFICIAL, graph_output, load_graph, official_params
    from mxnet_files import encode_params, write_params
    from shared_data import DATA, one_thread, require

# The record each real graph belongs to (one per file; the others share it).
MODEL_OF = {
    "MemNet_M6R6_80C64_SR": "memnet.sr_x2",
    "MemNet_M6R6_80C64_GD": "memnet.denoise_s30",
    "MemNet_M6R6_80C64_JD": "memnet.jpeg_q10",
    "MemNet_M10R10_212C64_SR": "memnet.sr_m10r10_x3",
}
OFFICIAL_RECORDS = [n for n in list_models(arch="memnet") if n != "memnet.denoise_blind"]


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():  # thousands of small ops; see shared_data.one_thread
        yield


def _graph_file(prefix: str) -> Path:
    return require("mxnet", "memnet_official") / f"{prefix}-symbol.json"


_MADE: dict[str, tuple[dict, dict[str, torch.Tensor]]] = {}


def _official(prefix: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(graph, parameters in the authors' layout), made once per session: they are large."""
    if prefix not in _MADE:
        graph = load_graph(_graph_file(prefix))
        _MADE[prefix] = (graph, official_params(graph, seed=len(_MADE)))
    graph, params = _MADE[prefix]
    return graph, dict(params)


def _write_pair(folder: Path, prefix: str, params: dict[str, torch.Tensor], graph: dict | None = None) -> Path:
    """PREFIX-0000.params and, beside it, the graph (the real file, or an edited copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    if graph is None:
        shutil.copy(_graph_file(prefix), folder / f"{prefix}-symbol.json")
    else:
        (folder / f"{prefix}-symbol.json").write_text(json.dumps(graph))
    return write_params(folder / f"{prefix}-0000.params", params)


# ------------------------------------------------------------------------------------ the graph, exactly


@pytest.mark.parametrize("prefix", OFFICIAL)
def test_restorekit_memnet_computes_what_the_official_graph_computes(tmp_path, prefix):
    graph, params = _official(prefix)
    src = _write_pair(tmp_path, prefix, params)
    dst = tmp_path / "converted.safetensors"
    # The format comes from the suffix: no --from.
    assert main(["convert", str(src), str(dst), "--model", MODEL_OF[prefix]]) == 0
    sd, header = read_weights(dst)
    blocks = 10 if "M10R10" in prefix else 6
    assert header["config"]["blocks"] == header["config"]["recursions"] == blocks
    assert header["config"]["bn_eps"] == 1e-4
    scalars = [float(n["attrs"]["scalar"]) for n in graph["nodes"] if n["op"] == "_mul_scalar"]
    assert torch.equal(sd["output_weights"], torch.tensor(scalars, dtype=torch.float32))
    net = load_model(dst)
    x = torch.rand(2, 1, 17, 13, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ours = net(x).output
    ref = graph_output(graph, params, x)
    assert float((ours.double() - ref).abs().max()) <= 1e-4
    # Not a vacuous match: the reconstructions change the output well beyond that tolerance.
    assert float((ref - x.double() * sum(scalars)).abs().max()) > 1e-2


def _convert_error(tmp_path: Path, prefix: str, params: dict, graph: dict | None = None, model: str = "") -> str:
    src = _write_pair(tmp_path, prefix, params, graph)
    rec = get_record(model or MODEL_OF[prefix])
    spec = get_arch("memnet")
    with pytest.raises(ConversionError) as info:
        read_checkpoint(src, spec, {**spec.default_config, **rec.config})
    return str(info.value)


def test_shared_copies_that_differ_are_refused(tmp_path):
    prefix = "MemNet_M6R6_80C64_GD"
    graph, params = _official(prefix)
    params["arg:conv03_04_a_weight"] = params["arg:conv03_04_a_weight"] + 1e-3
    msg = _convert_error(tmp_path / "a", prefix, params)
    assert "'conv03_01_a' and 'conv03_04_a' are copies of one convolution" in msg and "0.001" in msg
    graph, params = _official(prefix)
    params["arg:conv_end_05_bias"] = params["arg:conv_end_05_bias"] * 2
    assert "'conv_end_01' and 'conv_end_05' are copies" in _convert_error(tmp_path / "b", prefix, params)


def test_the_graph_is_required_and_read(tmp_path):
    prefix = "MemNet_M6R6_80C64_JD"
    graph, params = _official(prefix)
    alone = tmp_path / "alone" / f"{prefix}-0000.params"
    alone.parent.mkdir()
    write_params(alone, params)
    spec, rec = get_arch("memnet"), get_record("memnet.jpeg_q10")
    with pytest.raises(ConversionError, match="PREFIX-symbol.json beside PREFIX-0000.params"):
        read_checkpoint(alone, spec, {**spec.default_config, **rec.config})
    # The eps comes from the graph; a graph with another one asks for the matching config.
    edited = json.loads(json.dumps(graph))
    for node in edited["nodes"]:
        if node["op"] == "BatchNorm":
            node["attrs"]["eps"] = "0.001"
    msg = _convert_error(tmp_path / "eps", prefix, params, edited)
    assert "eps 0.001" in msg and 'pass the config {"bn_eps": 0.001}' in msg
    # A graph wired differently (block 3's gate concatenation reversed) is not what restorekit's MemNet computes.
    edited = json.loads(json.dumps(graph))
    concat = next(n for n in edited["nodes"] if n["name"] == "concat03")
    concat["inputs"].reverse()
    msg = _convert_error(tmp_path / "wired", prefix, params, edited)
    assert "does not compute MemNet M6R6" in msg and "'concat03' (Concat)" in msg
    edited = json.loads(json.dumps(graph))
    next(n for n in edited["nodes"] if n["op"] == "Convolution")["attrs"]["kernel"] = "(three, 3)"
    assert "graph beside the .params file is malformed" in _convert_error(tmp_path / "bad", prefix, params, edited)
    # Another variant's graph says which config fits it.
    m10 = load_graph(_graph_file("MemNet_M10R10_212C64_SR"))
    msg = _convert_error(tmp_path / "m10", prefix, params, m10)
    assert 'looks like M10R10: pass the config {"blocks": 10, "recursions": 10}' in msg
    # Arrays the graph needs, or arrays it does not have.
    less = {k: v for k, v in params.items() if k != "aux:bn_conv02_03_b_moving_var"}
    assert "lacks 1 array(s) that its graph uses: aux:bn_conv02_03_b_moving_var" in _convert_error(
        tmp_path / "less", prefix, less
    )
    assert "does not use: arg:extra" in _convert_error(
        tmp_path / "more", prefix, {**params, "arg:extra": torch.ones(1)}
    )


def test_fix_gamma_in_a_graph_means_gamma_one(tmp_path):
    """MXNet ignores gamma where fix_gamma is true; the conversion does the same, so the outputs still agree."""
    prefix = "MemNet_M6R6_80C64_GD"
    graph, params = _official(prefix)
    edited = json.loads(json.dumps(graph))
    for node in edited["nodes"]:
        if node["op"] == "BatchNorm" and node["name"].endswith(("_b", "transition_02")):
            node["attrs"]["fix_gamma"] = "True"
    src = _write_pair(tmp_path, prefix, params, edited)
    rec = get_record("memnet.denoise_s30")
    spec = get_arch("memnet")
    sd = read_checkpoint(src, spec, {**spec.default_config, **rec.config})
    assert torch.equal(sd["memory.0.bn_b.2.weight"], torch.ones(64))
    assert torch.equal(sd["memory.0.bn_a.2.weight"], params["arg:bn_conv01_03_a_gamma"])
    net = get_arch("memnet").build(**rec.config).eval()
    net.load_state_dict(sd)
    x = torch.rand(1, 1, 11, 12, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = net(x).output.double()
    assert float((ours - graph_output(edited, params, x)).abs().max()) <= 1e-4
    assert float((ours - graph_output(graph, params, x)).abs().max()) > 1e-3


# ------------------------------------------------------------------------------------------------ records


def _readme_rows() -> dict[str, str]:
    """path in the repository -> git blob SHA-1, from the data README's table."""
    require("mxnet")
    text = (DATA / "mxnet" / "README.md").read_text()
    commit = re.search(r"at\s+commit\s+`([0-9a-f]{40})`", text)[1]
    rows = dict(re.findall(r"^\| `(MemNet/official/[^`]+)` \| `([0-9a-f]{40})` \|", text, re.M))
    assert len(rows) == 8, rows
    rows["commit"] = commit
    return rows


def test_records_pin_both_files_at_the_readme_commit():
    rows = _readme_rows()
    raw = f"https://raw.githubusercontent.com/WolframRhodium/Super-Resolution-Zoo/{rows['commit']}/"
    for name in OFFICIAL_RECORDS:
        rec = get_record(name)
        up = rec.upstream
        assert up is not None and up.format == "mxnet" and len(up.companions) == 1, name
        graph = up.companions[0]
        for source in (up, graph):
            assert source.url.startswith(raw), source.url
            assert rows[source.url.removeprefix(raw)] == source.git_blob_sha1, source.url
        assert up.url.removesuffix("-0000.params") == graph.url.removesuffix("-symbol.json")
        # The graphs are here: their bytes are what the records pin.
        assert git_blob_sha1_file(_graph_file(Path(graph.url).name.removesuffix("-symbol.json"))) == graph.git_blob_sha1
        assert rec.hub is None and rec.bundled is None  # never re-uploaded, never bundled
        assert "no LICENSE" in rec.license and "never bundles or re-uploads" in rec.license
        assert rec.license_notice and rec.source == "authors' (pinned URL)"
        blocks = 10 if "m10r10" in name else 6
        assert (rec.config["blocks"], rec.config["recursions"], rec.config["bn_eps"]) == (blocks, blocks, 1e-4)
        assert rec.params == {6: 695_497, 10: 1_422_029}[blocks]
        with torch.device("meta"):
            assert sum(p.numel() for p in get_arch("memnet").build(**rec.config).parameters()) == rec.params
    files = {get_record(n).upstream.url.rsplit("/", 1)[1]: n for n in OFFICIAL_RECORDS}
    assert len(files) == 4  # SR x2/x3/x4 share one file, the denoisers one, the deblockers one, M10R10 one
    info = json.loads(json.dumps(registry.model_info("memnet.sr_x3", as_dict=True), default=str))
    assert info["upstream"]["companions"][0]["url"].endswith("MemNet_M6R6_80C64_SR-symbol.json")


def test_info_shows_source_and_colour_policy_and_companions_must_be_pinned(capsys):
    assert main(["info", "memnet.denoise_s30"]) == 0
    text = capsys.readouterr().out
    assert "authors' (pinned URL)" in text and "grey_on_color  rgb" in text and "MemNet_M6R6_80C64_GD-symbol" in text
    assert main(["info", "msrn.sr_x2"]) == 0
    assert "grey_on_color" not in capsys.readouterr().out  # an RGB network takes colour as it is
    rec = get_record("memnet.sr_x2")
    loose = dataclasses.replace(rec.upstream.companions[0], git_blob_sha1=None)
    with pytest.raises(ValueError, match="needs a pinned digest"):
        dataclasses.replace(rec, upstream=dataclasses.replace(rec.upstream, companions=(loose,)))
    with pytest.raises(ValueError, match="grey_on_color must be one of"):
        dataclasses.replace(rec, grey_on_color="ycbcr")


def test_reported_figures_are_the_papers():
    """The records' reported SR figures are the ones in the architecture notes (the paper's Y-channel table)."""
    notes = DATA.parent / "docs" / "architectures.md"
    if not notes.is_file():
        pytest.skip(f"{notes} not found")
    text = notes.read_text().split("## 2. MemNet", 1)[1].split("## 3.", 1)[0]
    for ds in ("Set5", "Set14", "B100", "Urban100"):
        row = re.search(rf"^\| {ds} \| (.+) \|$", text, re.M)[1]
        for scale, cell in zip((2, 3, 4), row.split(" | ")):
            psnr, ssim = map(float, cell.split("/"))
            metrics = {(m.dataset, m.metric): m for m in get_record(f"memnet.sr_x{scale}").metrics}
            assert metrics[(ds, "psnr")].value == psnr and metrics[(ds, "ssim")].value == ssim
            assert metrics[(ds, "psnr")].source == "reported"
    classic5 = re.search(r"Classic5 (\d+\.\d+)", text)[1]
    q10 = {m.dataset: m.value for m in get_record("memnet.jpeg_q10").metrics}
    assert q10["Classic5"] == float(classic5)


# ----------------------------------------------------------------------------------------------- downloads

_PATH = "WolframRhodium/Super-Resolution-Zoo/041842f177ab4aa59287f8561ec9b3446bd4826c/MemNet/official/"


def _blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _serve(server, name: str = "memnet.denoise_s30", prefix: str = "MemNet_M6R6_80C64_GD", tag: str | None = None):
    """The record ``name`` with its two files served by the local server at their upstream paths."""
    graph, params = _official(prefix)
    data = encode_params(params)
    symbol = _graph_file(prefix).read_bytes()
    p_url = server.add(f"{_PATH}{prefix}-0000.params", data)
    s_url = server.add(f"{_PATH}{prefix}-symbol.json", symbol)
    base = get_record(name)
    up = dataclasses.replace(
        base.upstream,
        url=p_url,
        git_blob_sha1=_blob(data),
        companions=(dataclasses.replace(base.upstream.companions[0], url=s_url, git_blob_sha1=_blob(symbol)),),
    )
    rec = dataclasses.replace(base, tag=tag or base.tag + "_local", default=False, upstream=up)
    return rec, graph, params


def test_download_fetches_and_verifies_both_files_and_converts_once(file_server, isolated_cache):
    rec, graph, params = _serve(file_server)
    path = resolve(rec, progress=False)
    assert sorted(file_server.requests) == sorted(
        [("GET", f"/{_PATH}MemNet_M6R6_80C64_GD-0000.params"), ("GET", f"/{_PATH}MemNet_M6R6_80C64_GD-symbol.json")]
    )
    sd, header = read_weights(path)
    assert header["name"] == rec.name and header["config"]["bn_eps"] == 1e-4
    scalars = [float(n["attrs"]["scalar"]) for n in graph["nodes"] if n["op"] == "_mul_scalar"]
    assert torch.equal(sd["output_weights"], torch.tensor(scalars))
    assert torch.equal(sd["memory.5.conv_b.weight"], params["arg:conv06_04_b_weight"])
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []  # both raw files are gone
    file_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert file_server.requests == []  # converted once
    # A new pin of the graph is a new conversion (the cached file was made from the old graph).
    moved = dataclasses.replace(
        rec.upstream, companions=(dataclasses.replace(rec.upstream.companions[0], git_blob_sha1="0" * 40),)
    )
    assert _converted_path(dataclasses.replace(rec, upstream=moved)) != path


@pytest.mark.parametrize("which", ["params", "symbol"])
def test_blob_mismatch_on_either_file_is_refused(file_server, isolated_cache, which):
    rec, _, _ = _serve(file_server)
    url = rec.upstream.url if which == "params" else rec.upstream.companions[0].url
    path = "/" + url.split("/", 3)[3]
    file_server.corrupt(path, b"{}" if which == "symbol" else encode_params({"arg:w": torch.ones(1)}))
    with pytest.raises(ChecksumError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    pinned = rec.upstream if which == "params" else rec.upstream.companions[0]
    assert url in message and pinned.git_blob_sha1 in message and "was deleted" in message
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []
    assert not (isolated_cache.restorekit / "converted").exists()


def test_missing_symbol_file_is_a_clear_failure(file_server, isolated_cache):
    rec, _, _ = _serve(file_server)
    gone = dataclasses.replace(rec.upstream.companions[0], url=file_server.url_for(f"{_PATH}nowhere-symbol.json"))
    rec = dataclasses.replace(rec, upstream=dataclasses.replace(rec.upstream, companions=(gone,)))
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    message = str(info.value)
    assert f"upstream {gone.url}" in message and "404" in message
    assert f"restorekit download {rec.name}" in message
    assert list((isolated_cache.restorekit / "downloads").iterdir()) == []


def test_offline_with_and_without_the_converted_cache(file_server, monkeypatch):
    rec, _, _ = _serve(file_server)
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError) as info:
        resolve(rec, progress=False)
    assert f"restorekit download {rec.name}" in str(info.value) and "downloads are disabled" in str(info.value)
    assert file_server.requests == []
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    path = resolve(rec, progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    file_server.clear_log()
    assert resolve(rec, progress=False) == path
    assert file_server.requests == []


# ---------------------------------------------------------------------------------- Restorer and colour


def _noisy_colour(h: int = 20, w: int = 23, sigma: float = 30.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    clean = np.stack([0.5 + 0.3 * np.sin(4 * xx + 3 * yy + k) for k in range(3)], -1)
    noise = np.random.default_rng(seed).normal(0, sigma / 255, clean.shape)  # independent in R, G and B
    noisy = (np.clip(clean + noise, 0, 1) * 255 + 0.5).astype(np.uint8)
    return (clean * 255 + 0.5).astype(np.uint8), noisy


def test_restorer_memnet_runs_the_authors_denoiser_end_to_end(file_server, monkeypatch):
    rec, graph, params = _serve(file_server, "memnet.denoise_s50", tag="denoise_s50")
    # What the name "memnet" resolves to, with its files served locally instead of upstream.
    monkeypatch.setitem(registry._RECORDS, rec.name, dataclasses.replace(rec, default=True))
    assert get_record("memnet").upstream.url == rec.upstream.url
    _, noisy = _noisy_colour()
    monkeypatch.setattr("restorekit.weights._NOTICED", set())  # the notice shows once per process
    with pytest.warns(UserWarning, match="without a license"):
        r = Restorer("memnet", device="cpu")
    out = r.run(noisy)
    assert out.shape == noisy.shape and out.dtype == np.uint8
    # Every RGB channel went through the authors' graph (the denoiser's colour policy), with the Restorer's
    # mirrored surroundings (r.context px of reflection on every side, cropped off after).
    c = r.context
    assert c == 16
    padded = np.pad(noisy, ((c, c), (c, c), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[:, None].double() / 255
    ref = graph_output(graph, params, x).clamp(0, 1)[:, 0].permute(1, 2, 0).numpy()[c:-c, c:-c]
    assert np.abs(out.astype(float) - ref * 255).max() <= 0.51 + 1e-3
    assert len(file_server.requests) == 2


class _Smoother(nn.Module):
    """A stand-in grey denoiser: a 5x5 box filter (a MemNet's output type, so select_output applies)."""

    def forward(self, x: torch.Tensor) -> MemNetOutput:
        y = nn.functional.avg_pool2d(nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
        return MemNetOutput(y, (y,))


def _ycc_error(img: np.ndarray, clean: np.ndarray) -> np.ndarray:
    from restorekit.image import rgb_to_ycbcr

    t = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in (img, clean)]
    diff = rgb_to_ycbcr(t[0]) - rgb_to_ycbcr(t[1])
    return diff.pow(2).mean(dim=(0, 2, 3)).sqrt().numpy()  # RMS error of Y, Cb, Cr


@pytest.mark.parametrize("name", ["memnet.denoise_s30", "memnet.jpeg_q10"])
def test_colour_policy_on_an_image_with_noise_in_every_channel(name):
    rec = get_record(name)
    tiny = dataclasses.replace(rec, tag=rec.tag + "_tinytest", default=False, config={**rec.config, "channels": 4})
    clean, noisy = _noisy_colour(48, 40, sigma=25)
    with registry.temporary(None, tiny):
        r = Restorer(tiny.name, pretrained=False, device="cpu")
        r.model = _Smoother()
        out = r.run(noisy)
    before, after = _ycc_error(noisy, clean), _ycc_error(out, clean)
    if rec.grey_on_color == "rgb":
        # A denoiser takes the noise out of all of the image: luma and both chroma channels.
        assert (after < 0.6 * before).all(), (before, after)
        per_channel = np.sqrt(((out.astype(float) - clean) ** 2).mean(axis=(0, 1)))
        noisy_channel = np.sqrt(((noisy.astype(float) - clean) ** 2).mean(axis=(0, 1)))
        assert (per_channel < 0.6 * noisy_channel).all()
    else:
        # SR and JPEG work on the Y as their papers do: the luma is restored, the chroma carried over as it came.
        assert after[0] < 0.6 * before[0]
        assert np.allclose(after[1:], before[1:], rtol=0.05)


def test_restorekit_list_says_which_models_run(capsys):
    assert main(["list", "--arch", "memnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines if line.startswith("memnet.")}
    assert "none (random init only)" in row["memnet.denoise_blind"]
    assert all("authors' (pinned URL)" in row[n] for n in OFFICIAL_RECORDS)
    assert any("no weights are published" in line for line in lines)
    assert main(["list", "--arch", "memnet", "--published"]) == 0
    assert "memnet.denoise_blind" not in capsys.readouterr().out
