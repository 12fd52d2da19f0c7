"""Paddle ``.pdparams`` reader, refusal of code-running pickles, and `restorekit convert` on all formats."""

from __future__ import annotations

import builtins
import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit.archs.mprnet import CAB, MPRNet
from restorekit.convert.paddle import read_pdparams
from restorekit.errors import ConversionError
from restorekit.registry import get_arch
from restorekit.weights import load_model, read_checkpoint


@pytest.fixture
def tiny(tiny_model):
    """``tiny(seed=0)``: a randomly initialised tiny MPRNet in eval mode."""

    def make(seed: int = 0) -> MPRNet:
        torch.manual_seed(seed)
        net = tiny_model("mprnet")
        with torch.no_grad():
            net.act.weight.fill_(0.17)
        return net.eval()

    return make


def paddle_state(net: MPRNet) -> OrderedDict:
    """What ``paddle.save(generator.state_dict())`` writes for PaddleGAN's MPRNet: numpy arrays, the PReLU
    under every CAB as ``._weight``, and Paddle's table of internal parameter names."""
    sd: OrderedDict = OrderedDict()
    names = {}
    for k, v in net.state_dict().items():
        if k != "act.weight":
            sd[k] = v.numpy().copy()
            names[k] = f"conv2d_{len(names)}.w_0"
    for name, module in net.named_modules():
        if isinstance(module, CAB):
            sd[f"{name}.body.1._weight"] = net.act.weight.detach().numpy().copy()
            names[f"{name}.body.1._weight"] = "p_re_lu_0.w_0"
    sd["StructuredToParameterName@@"] = names
    return sd


def write_pdparams(path: Path, obj: object, protocol: int = 4, numpy1: bool = False) -> Path:
    data = pickle.dumps(obj, protocol=protocol)
    if numpy1:
        # A file written under numpy 1 names numpy.core.multiarray (protocol 2 spells globals as text lines).
        assert protocol <= 2 and b"numpy._core.multiarray" in data
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)
    return path


def same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        return torch.equal(a(x)[0], b(x)[0])


@pytest.mark.parametrize(("protocol", "numpy1"), [(4, False), (2, False), (2, True)])
def test_pdparams_round_trip(tmp_path, protocol, numpy1, tiny, tiny_config, tiny_model):
    net = tiny()
    path = write_pdparams(tmp_path / "MPR_Deblurring.pdparams", paddle_state(net), protocol, numpy1)
    raw = read_pdparams(path)
    assert "StructuredToParameterName@@" not in raw
    assert sum(k.endswith("._weight") for k in raw) == 34  # every CAB of the tiny net (55 at full size)
    assert all(isinstance(v, torch.Tensor) for v in raw.values())
    assert torch.equal(raw["tail.weight"], net.tail.weight.detach())
    sd = read_checkpoint(path, get_arch("mprnet"), tiny_config("mprnet"))  # "auto" picks paddle by the suffix
    assert set(sd) == set(net.state_dict())
    again = tiny_model("mprnet").eval()
    again.load_state_dict(sd)
    assert same_output(net, again)


def test_pdparams_wrapped_in_a_training_checkpoint(tmp_path, tiny, tiny_config):
    net = tiny()
    path = write_pdparams(tmp_path / "epoch_10.pdparams", {"generator": paddle_state(net)})
    assert set(read_checkpoint(path, get_arch("mprnet"), tiny_config("mprnet"))) == set(net.state_dict())


class Payload:
    """Unpickling this calls open(marker, "w") (pickled as io.open): a stand-in for any code a pickle could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def test_payload_really_runs_under_plain_pickle(tmp_path):
    # The refusal tests below mean something only if this payload does run code when unpickled normally.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"w": Payload(marker)})).get("w").close()
    assert marker.exists()


def test_malicious_pdparams_is_refused_before_it_runs(tmp_path, tiny, tiny_config):
    marker = tmp_path / "pwned"
    sd = paddle_state(tiny())
    sd["tail.weight"] = Payload(marker)
    path = write_pdparams(tmp_path / "evil.pdparams", sd)
    with pytest.raises(ConversionError, match="refused for safety") as info:
        read_pdparams(path)
    assert "io.open" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    with pytest.raises(ConversionError, match="refused for safety"):
        read_checkpoint(path, get_arch("mprnet"), tiny_config("mprnet"))
    assert not marker.exists()


def test_malicious_pth_is_refused_before_it_runs(tmp_path, tiny_config):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_deblurring.pth"
    torch.save({"epoch": 1, "state_dict": {"tail.weight": Payload(marker)}}, path)
    with pytest.raises(ConversionError, match="refused for safety") as info:
        read_checkpoint(path, get_arch("mprnet"), tiny_config("mprnet"))
    assert "weights_only" in str(info.value)
    assert not marker.exists()


def test_not_numbers_or_not_a_pickle(tmp_path):
    obj = write_pdparams(tmp_path / "obj.pdparams", {"w": np.array(["a", "b"], dtype=object)})
    with pytest.raises(ConversionError, match="not numbers"):
        read_pdparams(obj)
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"\x00not a pickle")
    with pytest.raises(ConversionError, match="not a readable .pdparams"):
        read_pdparams(junk)
    empty = write_pdparams(tmp_path / "empty.pdparams", {"StructuredToParameterName@@": {}})
    with pytest.raises(ConversionError, match="no arrays"):
        read_pdparams(empty)


def test_convert_cli_reads_all_three_formats(tmp_path, tiny, tiny_config, cli):
    net = tiny(seed=3)
    cfg = json.dumps(tiny_config("mprnet"))
    pd = write_pdparams(tmp_path / "MPR_Deblurring.pdparams", paddle_state(net))
    pth = tmp_path / "model_deblurring.pth"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in read_pdparams(pd).items()}}, pth)
    ours = tmp_path / "ours.safetensors"
    # paddle by suffix, torch named explicitly, then our own safetensors back through convert.
    runs = [(pd, tmp_path / "a.safetensors", ()), (pth, tmp_path / "b.safetensors", ("--from", "torch"))]
    runs.append((tmp_path / "a.safetensors", ours, ("--from", "safetensors")))
    for src, dst, extra in runs:
        proc = cli("convert", src, dst, "--arch", "mprnet", "--config", cfg, *extra)
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()) == dst
        assert same_output(net, load_model(dst))
    bad = write_pdparams(tmp_path / "evil.pdparams", {"w": Payload(tmp_path / "pwned")})
    proc = cli("convert", bad, tmp_path / "c.safetensors", "--arch", "mprnet", "--config", cfg)
    assert proc.returncode == 1 and "refused for safety" in proc.stderr and "io.open" in proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "c.safetensors").exists()
