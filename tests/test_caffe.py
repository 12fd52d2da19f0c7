"""The Caffe reader on files this test writes in the real protobuf wire format, and MemNet's Caffe mapping.

The MemNet files use the layer names and blob layouts of the authors' deploy net
(test/MemNet_M6R6_80C64/MemNet_M6R6_80C64_deploy.prototxt): BatchNorm's three blobs (mean·s, var·s, s),
Scale's γ/β, every shared convolution stored again under each layer that uses it. The expected
output is computed by a plain Caffe-semantics forward over those blobs, independent of our modules.
"""

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restorekit.cli import main
from restorekit.convert.caffe import read_caffemodel
from restorekit.errors import ConversionError
from restorekit.registry import get_arch
from restorekit.restorer import Restorer
from restorekit.weights import convert, read_checkpoint, read_weights

# ---------------------------------------------------------------------------------- a small protobuf encoder


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, 10 bytes
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _msg(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _msg(field, text.encode())


def _blob(a: np.ndarray, *, legacy: bool = False, unpacked: bool = False, double: bool = False) -> bytes:
    """A BlobProto: shape (7) or legacy num/channels/height/width (1-4); data (5) or double_data (8)."""
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        out = b"".join(_key(i + 1, 0) + _varint(d) for i, d in enumerate(dims))
    else:
        out = _msg(7, _msg(1, b"".join(_varint(d) for d in a.shape)))
    flat = a.ravel()
    if double:
        out += _msg(8, flat.astype("<f8").tobytes())
    elif unpacked:
        out += b"".join(_key(5, 5) + struct.pack("<f", v) for v in flat)
    else:
        out += _msg(5, flat.astype("<f4").tobytes())
    return out


def _layer(name: str, type_: str, blobs: list[bytes], bottom: str = "x") -> bytes:
    """A LayerParameter with the fields Caffe writes around the blobs (bottom, top, param specs)."""
    param = _msg(6, _key(3, 5) + struct.pack("<f", 1.0))  # ParamSpec { lr_mult: 1 }
    return (
        _str(1, name) + _str(2, type_) + _str(3, bottom) + _str(4, name) + param + b"".join(_msg(7, b) for b in blobs)
    )


def _net(layers: list[bytes]) -> bytes:
    head = _str(1, "P40_MemNet") + _str(3, "data") + b"".join(_key(4, 0) + _varint(d) for d in (1, 1, 144, 144))
    return head + b"".join(_msg(100, layer) for layer in layers)


# --------------------------------------------------------------------------------------- the reader itself


def test_reader_decodes_every_blob_encoding(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    s = np.array([7.5], np.float32)
    v1 = _str(4, "old_conv") + _key(5, 0) + _varint(4) + _msg(6, _blob(w, legacy=True)) + _msg(6, _blob(b))
    v0 = _msg(1, _str(1, "v0_ip") + _msg(50, _blob(s)))  # V1LayerParameter.layer = a V0LayerParameter
    data = _net(
        [
            _layer("conv", "Convolution", [_blob(w), _blob(b, legacy=True)]),
            _layer("relu", "ReLU", []),  # no blobs: not in the result
            _layer("unpacked", "Scale", [_blob(b, unpacked=True), _blob(s, double=True)]),
            _layer("empty", "Scale", [_blob(np.zeros((0,), np.float32))]),
        ]
    ) + b"".join(_msg(2, layer) for layer in (v1, v0))
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    sd = read_caffemodel(path)
    assert list(sd) == [
        "conv/0",
        "conv/1",
        "unpacked/0",
        "unpacked/1",
        "empty/0",
        "old_conv/0",
        "old_conv/1",
        "v0_ip/0",
    ]
    assert torch.equal(sd["conv/0"], torch.from_numpy(w)) and torch.equal(sd["conv/1"].flatten(), torch.from_numpy(b))
    assert sd["conv/1"].shape == (1, 1, 1, 2)  # legacy 4-D kept as stored; filters squeeze it
    assert torch.equal(sd["unpacked/0"], torch.from_numpy(b)) and sd["unpacked/1"].dtype == torch.float32
    assert float(sd["unpacked/1"]) == 7.5 and sd["empty/0"].shape == (0,)
    assert torch.equal(sd["old_conv/0"], torch.from_numpy(w)) and torch.equal(sd["v0_ip/0"], torch.from_numpy(s))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "holds no Caffe layers"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "not a readable Caffe model"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "not a readable Caffe model"),  # a torch zip checkpoint
        (b'name: "MemNet"\nlayer {\n  name: "conv1"\n}\n', "not a readable Caffe model"),  # a prototxt
        (_net([_layer("relu", "ReLU", [])]), "no weights"),
        (_net([_layer("a", "Scale", [_blob(np.ones(2, np.float32))])] * 2), "two layers with weights"),
        (_msg(100, _str(2, "Scale") + _msg(7, _blob(np.ones(2, np.float32)))), "no name"),
        (_msg(100, _msg(7, _msg(7, _msg(1, _varint(3))) + _msg(5, b"\0" * 8))), "needs 3 values, the data has 2"),
        (_msg(100, _msg(7, _msg(7, _msg(1, _varint(-2))))), "negative blob dimension"),
        (_msg(100, _msg(7, _msg(5, b"\0" * 6))), "not a multiple of 4"),
    ],
    ids=["empty", "png", "torch-zip", "prototxt", "no-blobs", "duplicate", "nameless", "count", "negative", "odd"],
)
def test_reader_rejects_what_is_not_a_caffemodel(tmp_path, data, message):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=message):
        read_caffemodel(path)


def test_reader_rejects_truncated_files_at_every_cut(tmp_path):
    good = _net([_layer("conv", "Convolution", [_blob(np.ones((2, 1, 3, 3), np.float32)), _blob(np.ones(2))])])
    path = tmp_path / "cut.caffemodel"
    for cut in range(1, len(good)):
        path.write_bytes(good[:cut])
        try:
            sd = read_caffemodel(path)
        except ConversionError:
            continue
        # A cut that falls exactly between two fields leaves a shorter but well-formed message.
        assert all(t.numel() for t in sd.values()) and "conv/0" in sd


# ------------------------------------------------------------------------------ MemNet in the authors' names


def _authors_blobs(blocks: int, recursions: int, c: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random weights laid out as the authors' deploy net stores them (shared convs copied per layer)."""
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    out: dict[str, list[np.ndarray]] = {}

    def bn(name: str, ch: int) -> None:
        s = np.float32(999.982)  # Caffe's moving-average factor after long training
        mean, var = arr(ch, scale=0.1), rng.uniform(0.5, 2.0, ch).astype(np.float32)
        out[f"bn_{name}"] = [mean * s, var * s, np.array([s], np.float32)]
        out[f"scale_{name}"] = [rng.uniform(0.5, 1.5, ch).astype(np.float32), arr(ch, scale=0.05)]

    def conv(name: str, cout: int, cin: int, k: int, shared=None) -> list[np.ndarray]:
        blobs = shared or [arr(cout, cin, k, k, scale=(2 / (cin * k * k)) ** 0.5 * 0.5), arr(cout, scale=0.02)]
        out[name] = [b.copy() for b in blobs]
        return blobs

    bn("conv1", 1)
    conv("conv1", c, 1, 3)
    recon = None
    for m in range(1, blocks + 1):
        shared = {"a": None, "b": None}
        for r in range(1, recursions + 1):
            for p in "ab":
                bn(f"conv{m:02d}_{r:02d}_{p}", c)
                shared[p] = conv(f"conv{m:02d}_{r:02d}_{p}", c, c, 3, shared[p])
        bn(f"conv_transition_{m:02d}", (m + recursions) * c)
        conv(f"conv_transition_{m:02d}", c, (m + recursions) * c, 1)
        bn(f"conv_end_{m:02d}", c)
        recon = conv(f"conv_end_{m:02d}", 1, c, 3, recon)
        out[f"weight_output_end_{m:02d}"] = [np.array([rng.uniform(0.05, 0.3)], np.float32)]
    return out


def _write(path, blobs: dict[str, list[np.ndarray]], legacy_bias: bool = False) -> None:
    layers = []
    for name, arrays in blobs.items():
        kind = "BatchNorm" if name.startswith("bn_") else "Scale" if "scale" in name or "weight_" in name else "Conv"
        enc = [_blob(a, legacy=legacy_bias and kind == "Conv" and a.ndim == 1) for a in arrays]
        layers.append(_layer(name, kind, enc))
        if kind == "Conv":
            layers.append(_layer(name.replace("conv", "relu", 1), "ReLU", []))
    path.write_bytes(_net(layers))


def _mirrored(x: torch.Tensor, pad: int = 16) -> torch.Tensor:
    """``x`` with the 16 px of mirrored surroundings the Restorer gives every image (numpy's reflect: any size)."""
    return torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect"))


def _caffe_forward(blobs: dict[str, list[np.ndarray]], x: torch.Tensor, blocks: int, recursions: int) -> torch.Tensor:
    """The deploy prototxt's graph, layer by layer, on the Caffe blobs (BatchNorm: stats / factor, eps 1e-5)."""
    t = {k: [torch.from_numpy(a) for a in v] for k, v in blobs.items()}

    def bnr(v, name):
        mean, var, s = t[f"bn_{name}"]
        f = 0.0 if float(s[0]) == 0 else 1 / float(s[0])
        g, b = t[f"scale_{name}"]
        y = (v - (mean * f)[:, None, None]) / torch.sqrt((var * f)[:, None, None] + 1e-5)
        return torch.relu(y * g[:, None, None] + b[:, None, None])

    def conv(v, name):
        w, b = t[name]
        return F.conv2d(v, w, b.reshape(-1), padding=w.shape[-1] // 2)

    conv1 = conv(bnr(x, "conv1"), "conv1")
    transitions, prev, result = [], conv1, 0
    for m in range(1, blocks + 1):
        e, elts = prev, []
        for r in range(1, recursions + 1):
            a = conv(bnr(e, f"conv{m:02d}_{r:02d}_a"), f"conv{m:02d}_{r:02d}_a")
            e = e + conv(bnr(a, f"conv{m:02d}_{r:02d}_b"), f"conv{m:02d}_{r:02d}_b")
            elts.append(e)
        gate = f"conv_transition_{m:02d}"
        prev = conv(bnr(torch.cat([conv1, *transitions, *elts], 1), gate), gate)
        transitions.append(prev)
        hr = x + conv(bnr(prev, f"conv_end_{m:02d}"), f"conv_end_{m:02d}")
        result = result + hr * t[f"weight_output_end_{m:02d}"][0]
    return result


def test_memnet_caffemodel_through_cli_convert_and_restorer(tmp_path, capsys, m2r3):
    blobs = _authors_blobs(m2r3["blocks"], m2r3["recursions"], m2r3["channels"])
    src = tmp_path / "MemNet_tiny_GD.caffemodel"
    _write(src, blobs, legacy_bias=True)
    dst = tmp_path / "memnet_tiny.safetensors"
    # memnet.denoise_s30 is the authors' MXNet file, whose graph's BatchNorm eps (1e-4) is not Caffe's.
    config = json.dumps(m2r3)
    argv = ["convert", str(src), str(dst), "--model", "memnet.denoise_s30", "--config", config, "--from", "caffe"]
    assert main(argv) == 1
    assert """pass the config {"bn_eps": 1e-05}""" in capsys.readouterr().err
    config = json.dumps({**m2r3, "bn_eps": 1e-5})
    argv = ["convert", str(src), str(dst), "--model", "memnet.denoise_s30", "--config", config, "--from", "caffe"]
    assert main(argv) == 0
    sd, header = read_weights(dst)
    assert header["arch"] == "memnet" and header["config"]["recursions"] == 3
    assert torch.equal(sd["memory.1.conv_a.weight"], torch.from_numpy(blobs["conv02_03_a"][0]))
    assert torch.equal(sd["recon_conv.bias"], torch.from_numpy(blobs["conv_end_02"][1]))
    x = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    ref = _caffe_forward(blobs, _mirrored(x), m2r3["blocks"], m2r3["recursions"])[..., 16:-16, 16:-16].clamp(0, 1)
    r = Restorer("memnet.denoise_s30", weights=dst, device="cpu")
    assert torch.allclose(r.run(x), ref, atol=1e-5)
    # A corrupt file fails with the reader's message through the CLI.
    src.write_bytes(src.read_bytes()[:-3])
    assert main([*argv, "--overwrite"]) == 1
    assert "not a readable Caffe model" in capsys.readouterr().err


def test_full_size_m6r6_caffemodel_with_the_authors_shapes(tmp_path):
    blobs = _authors_blobs(6, 6, 64, seed=3)
    assert blobs["conv_transition_06"][0].shape == (64, 768, 1, 1) and blobs["conv_end_01"][0].shape == (1, 64, 3, 3)
    src = tmp_path / "MemNet_M6R6_80C64_GD.caffemodel"
    _write(src, blobs)
    assert len(read_caffemodel(src)) == sum(len(v) for v in blobs.values()) == 7 + 6 * (6 * 2 * 7 + 7 + 7 + 1)
    out = convert(src, tmp_path / "m6r6.safetensors", model="memnet.denoise_blind")
    sd, header = read_weights(out)
    assert header["config"] == {"blocks": 6, "recursions": 6, "channels": 64, "in_channels": 1, "bn_eps": 1e-5}
    assert sum(v.numel() for k, v in sd.items() if k.endswith(("weight", "bias")) or k == "output_weights") == 695_497
    mean = blobs["bn_conv03_04_b"][0] / blobs["bn_conv03_04_b"][2][0]
    assert torch.allclose(sd["memory.2.bn_b.3.running_mean"], torch.from_numpy(mean), rtol=1e-6)
    x = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    ref = _caffe_forward(blobs, _mirrored(x), 6, 6)[..., 16:-16, 16:-16].clamp(0, 1)
    for weights in (out, src):  # the converted file, or the .caffemodel itself (read by its suffix)
        r = Restorer("memnet.denoise_blind", weights=weights, device="cpu")
        assert torch.allclose(r.run(x), ref, atol=1e-4)


def _expect(tmp_path, config, blobs, message):
    path = tmp_path / "bad.caffemodel"
    _write(path, blobs)
    spec = get_arch("memnet")
    with pytest.raises(ConversionError, match=message):
        read_checkpoint(path, spec, {**spec.default_config, **config}, format="caffe")


def test_memnet_mapping_fails_clearly(tmp_path, m2r3):
    def fresh():
        return _authors_blobs(m2r3["blocks"], m2r3["recursions"], m2r3["channels"])

    b = fresh()
    del b["weight_output_end_02"]
    _expect(tmp_path, m2r3, b, r"lacks 1 MemNet layer\(s\): weight_output_end_02")
    b = fresh()
    b["conv01_02_b"][0] = b["conv01_02_b"][0] + 1  # the copies of a shared convolution disagree
    _expect(tmp_path, m2r3, b, "'conv01_01_b' and 'conv01_02_b' share one convolution")
    b = fresh()
    b["conv_end_02"][1] = b["conv_end_02"][1] * 2
    _expect(tmp_path, m2r3, b, "'conv_end_01' and 'conv_end_02' share one convolution")
    b = fresh()
    b["conv1"][0] = np.zeros((5, 1, 3, 3), np.float32)
    _expect(tmp_path, m2r3, b, r"'conv1' blob 0 has shape \(5, 1, 3, 3\), the network expects \(4, 1, 3, 3\)")
    b = fresh()
    b["fc_extra"] = [np.zeros(3, np.float32)]
    _expect(tmp_path, m2r3, b, "layers with weights that M2R3 MemNet does not: fc_extra")
    b = fresh()
    b["bn_conv1"] = b["bn_conv1"][:2]
    _expect(tmp_path, m2r3, b, "'bn_conv1' has blobs \\[0, 1\\], a MemNet layer has 3")
    # A deeper file than the config: say which variant it is.
    _expect(
        tmp_path, m2r3, _authors_blobs(3, 3, 4), r'looks like M3R3: pass the config \{"blocks": 3, "recursions": 3\}'
    )
    _expect(tmp_path, m2r3, {"fc6": [np.zeros((8, 4), np.float32)]}, "no MemNet recursion layers .* MemNet caffemodel")


def test_batchnorm_factor_zero_gives_zero_statistics_as_caffe_does(tmp_path, m2r3):
    blobs = _authors_blobs(m2r3["blocks"], m2r3["recursions"], m2r3["channels"])
    blobs["bn_conv_end_01"][2] = np.zeros(1, np.float32)
    path = tmp_path / "zero.caffemodel"
    _write(path, blobs)
    spec = get_arch("memnet")
    sd = read_checkpoint(path, spec, {**spec.default_config, **m2r3}, format="caffe")
    assert not sd["recon_bn.0.running_mean"].any() and not sd["recon_bn.0.running_var"].any()


def test_m10r10_names_with_two_digit_block_and_recursion_10(tmp_path):
    # The M10R10 deploy net numbers blocks and recursions 01 … 10 (conv10_10_b, conv_transition_10, conv_end_10).
    cfg = {"channels": 2, "blocks": 10, "recursions": 10}
    blobs = _authors_blobs(10, 10, 2, seed=5)
    assert "conv10_10_b" in blobs and "weight_output_end_10" in blobs
    path = tmp_path / "MemNet_M10R10_212C64.caffemodel"
    _write(path, blobs)
    spec = get_arch("memnet")
    sd = read_checkpoint(path, spec, {**spec.default_config, **cfg}, format="caffe")
    net = spec.build(**{**spec.default_config, **cfg})
    net.load_state_dict(sd)
    x = torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(net.eval()(x).output, _caffe_forward(blobs, x, 10, 10), rtol=1e-4, atol=1e-4)
