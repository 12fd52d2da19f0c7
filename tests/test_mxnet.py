"""MXNet ``.params`` reader: real files MXNet wrote, files in every version and dtype, and clear refusals."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from restorekit.convert import FORMATS, detect_format
from restorekit.convert.mxnet import SYMBOL_KEY, read_params, symbol_of, symbol_path
from restorekit.errors import ConversionError

try:
    from .mxnet_files import TYPE_FLAGS, encode_array, encode_params, write_params
    from .shared_data import DATA, require
except ImportError:  # tests/ as a plain folder on sys.path
    from mxnet_files import TYPE_FLAGS, encode_array, encode_params, write_params
    from shared_data import DATA, require

SAMPLES = ("bicubic_2x", "AOD_net", "xSRCNNf_3x")


def _sample(name: str):
    folder = require("mxnet", "format_samples")
    return folder / f"{name}-0000.params"


def _blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _independent_names(data: bytes, start: int) -> list[str]:
    """The names list that starts at ``start``, decoded by hand; it must end the file."""
    count = int.from_bytes(data[start : start + 8], "little")
    out, pos = [], start + 8
    for _ in range(count):
        n = int.from_bytes(data[pos : pos + 8], "little")
        out.append(data[pos + 8 : pos + 8 + n].decode())
        pos += 8 + n
    assert pos == len(data)
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_real_files_match_an_independent_decoding(name):
    path = _sample(name)
    data = path.read_bytes()
    # These are the files the data README pins (git blob SHA-1 and size), i.e. what MXNet itself wrote.
    readme = (DATA / "mxnet" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if f"{name}-0000.params" in line and "|" in line)
    assert _blob_sha1(data) in row and f"{len(data):,}" in row
    got = read_params(path)
    arrays = {k: v for k, v in got.items() if k != SYMBOL_KEY}
    # A second decoding, written here from the layout: the arrays, then the names after them.
    expected_arrays = _independent_decode_arrays(data)
    names = _independent_names(data, expected_arrays[1])
    assert list(arrays) == names
    for key, (shape, dtype, total) in zip(names, expected_arrays[0]):
        t = arrays[key]
        assert tuple(t.shape) == shape and str(t.dtype).removeprefix("torch.") == dtype
        assert float(t.double().sum()) == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert all(k.startswith(("arg:", "aux:")) for k in names)


def _independent_decode_arrays(data: bytes) -> tuple[list[tuple[tuple[int, ...], str, float]], int]:
    """(shape, dtype, sum) per array and the offset where the names start (V2 dense only)."""
    dtypes = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64"}
    magic, reserved, count = struct.unpack_from("<QQQ", data, 0)
    assert (magic, reserved) == (0x112, 0)
    pos, out = 24, []
    for _ in range(count):
        version, stype, ndim = struct.unpack_from("<IiI", data, pos)
        assert version == 0xF993FAC9 and stype == 0
        pos += 12
        shape = struct.unpack_from(f"<{ndim}q", data, pos)
        pos += 8 * ndim
        _dev_type, _dev_id, flag = struct.unpack_from("<iii", data, pos)
        pos += 12
        dt = np.dtype(dtypes[flag]).newbyteorder("<")
        n = int(np.prod(shape))
        values = np.frombuffer(data, dtype=dt, count=n, offset=pos)
        pos += n * dt.itemsize
        out.append((tuple(shape), dtypes[flag], float(values.astype(np.float64).sum())))
    return out, pos


@pytest.mark.parametrize("name", SAMPLES)
def test_real_files_arg_and_aux_follow_the_graph(name):
    """Beside each sample is its graph: every parameter is an argument (``arg:``) except BatchNorm's moving
    statistics, which are auxiliary states (``aux:``), as MXNet's save_checkpoint names them."""
    got = read_params(_sample(name))
    graph = symbol_of(got)
    assert graph is not None and graph == json.loads(symbol_path(_sample(name)).read_text())
    nodes = graph["nodes"]
    aux = {nodes[i[0]]["name"] for n in nodes if n["op"] == "BatchNorm" for i in n["inputs"][3:5]}
    params = [n["name"] for n in nodes if n["op"] == "null" and n["name"] != "data"]
    expected = {("aux:" if p in aux else "arg:") + p for p in params}
    assert set(got) - {SYMBOL_KEY} == expected
    if name == "xSRCNNf_3x":
        assert aux, "this sample has BatchNorm, so aux: entries are really exercised"


def test_symbol_path_follows_mxnet_checkpoint_names(tmp_path):
    assert symbol_path(tmp_path / "Net_x2-0000.params") == tmp_path / "Net_x2-symbol.json"
    assert symbol_path(tmp_path / "Net-0013.params") == tmp_path / "Net-symbol.json"
    assert symbol_path(tmp_path / "renamed.params") == tmp_path / "renamed-symbol.json"
    path = write_params(tmp_path / "plain-0000.params", {"arg:w": torch.ones(2)})
    assert SYMBOL_KEY not in read_params(path)  # no graph beside it: only the arrays
    (tmp_path / "plain-symbol.json").write_text("{not json")
    with pytest.raises(ConversionError, match="not valid JSON"):
        read_params(path)
    (tmp_path / "plain-symbol.json").write_text('{"heads": []}')
    with pytest.raises(ConversionError, match="not an MXNet graph"):
        read_params(path)


def _every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for dtype in TYPE_FLAGS:
        if dtype.is_floating_point:
            t = torch.randn(2, 3, 4, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.rand(5, generator=g) > 0.5
        else:
            info = torch.iinfo(dtype)
            # Extremes too: a signedness or width mistake shows at the ends of the range.
            t = torch.tensor([info.min, 0, 1, info.max], dtype=dtype)
        out[f"arg:{str(dtype).removeprefix('torch.')}"] = t
    out["aux:scalar_like"] = torch.tensor([3.5])
    out["arg:empty"] = torch.zeros(0, 3)
    return out


@pytest.mark.parametrize("version", ["V1", "V2", "V3", "legacy"])
def test_every_dtype_and_version_round_trips(tmp_path, version):
    arrays = _every_dtype()
    if version == "legacy":
        arrays.pop("arg:empty")  # a zero-size dim is fine, but keep the legacy case to what old MXNet saved
    got = read_params(write_params(tmp_path / "all-0000.params", arrays, version))
    assert list(got) == list(arrays)
    for key, want in arrays.items():
        have = got[key]
        assert have.dtype == want.dtype and have.shape == want.shape, key
        assert torch.equal(have, want), key


def test_v3_scalars_and_unnamed_lists(tmp_path):
    # V3 (NumPy shapes): ndim 0 is a scalar with one value.
    scalar = encode_array(torch.tensor(2.5), "V3")
    data = encode_params([torch.ones(1)], "V2")
    data = data[:16] + (1).to_bytes(8, "little") + scalar + (0).to_bytes(8, "little")
    path = tmp_path / "s.params"
    path.write_bytes(data)
    got = read_params(path)
    assert list(got) == ["0"] and got["0"].shape == () and float(got["0"]) == 2.5
    # mx.nd.save of a list has no names: the arrays are numbered.
    path.write_bytes(encode_params([torch.ones(2), torch.zeros(3)], names=False))
    assert {k: v.shape for k, v in read_params(path).items()} == {"0": (2,), "1": (3,)}


def _expect(tmp_path, data: bytes, match: str) -> str:
    path = tmp_path / "bad-0000.params"
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=match) as info:
        read_params(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_truncated_files_at_every_offset_give_a_clear_error(tmp_path):
    data = encode_params({"arg:w": torch.randn(3, 2), "aux:m": torch.arange(4, dtype=torch.int64)})
    for cut in range(len(data)):
        path = tmp_path / "cut.params"
        path.write_bytes(data[:cut])
        with pytest.raises(ConversionError) as info:
            read_params(path)
        assert "truncated" in str(info.value) or "not a valid MXNet" in str(info.value), cut
    whole = tmp_path / "whole.params"
    whole.write_bytes(data)
    assert set(read_params(whole)) == {"arg:w", "aux:m"}


def test_corrupt_and_foreign_files_are_refused_clearly(tmp_path):
    good = encode_params({"arg:w": torch.ones(2, 2)})
    header = 24
    _expect(tmp_path, b"", "fewer than an MXNet .params header")
    _expect(tmp_path, b"\x89PNG\r\n\x1a\n" + bytes(40), "not the NDArray-list magic 0x112")
    _expect(tmp_path, good[:16] + (10**9).to_bytes(8, "little") + good[24:], "claims 1000000000 arrays")
    _expect(tmp_path, good[:header] + b"\x01\x02\x03\x04" + good[header + 4 :], "no NDArray version")
    # Storage type: sparse arrays are refused with what to do; an unknown one is corruption.
    for stype, kind in ((1, "row_sparse"), (2, "csr")):
        msg = _expect(tmp_path, good[: header + 4] + struct.pack("<i", stype) + good[header + 8 :], kind)
        assert "dense arrays only" in msg and "tostype('default')" in msg
    _expect(tmp_path, good[: header + 4] + struct.pack("<i", 7) + good[header + 8 :], "unknown storage type 7")
    # Offsets inside the first array: magic 4, stype 4, ndim 4, dims 2 x 8, dev_type 4, dev_id 4, flag 4.
    ctx = header + 12 + 16
    _expect(tmp_path, good[:ctx] + struct.pack("<i", 99) + good[ctx + 4 :], "device type 99")
    _expect(tmp_path, good[: ctx + 8] + struct.pack("<i", 13) + good[ctx + 12 :], "type flag 13")
    _expect(tmp_path, good[: header + 8] + struct.pack("<I", 1000) + good[header + 12 :], "1000 dimensions")
    _expect(tmp_path, good + b"\x00", "1 bytes follow the names")
    names_at = len(good) - (8 + 8 + len(b"arg:w"))
    _expect(tmp_path, good[:names_at] + (2).to_bytes(8, "little") + good[names_at + 8 :], "2 names for 1 arrays")
    bad_utf8 = good[: len(good) - 5] + b"\xff\xfe\xfd\xfc\xfb"
    _expect(tmp_path, bad_utf8, "not UTF-8")
    names = (2).to_bytes(8, "little") + 2 * ((1).to_bytes(8, "little") + b"w")
    dup = encode_params([torch.ones(1), torch.ones(1)], names=False)[:-8] + names
    _expect(tmp_path, dup, "appears twice")
    # V2 with ndim 0 is an uninitialised array: nothing to load.
    empty = good[:header] + struct.pack("<IiI", 0xF993FAC9, 0, 0)
    empty = good[:16] + (1).to_bytes(8, "little") + empty[24:] + (1).to_bytes(8, "little")
    empty += (5).to_bytes(8, "little") + b"arg:w"
    _expect(tmp_path, empty, "empty \\(uninitialised, V2\\) array")


def test_registered_by_suffix_for_restorekit_convert():
    assert FORMATS["mxnet"] == ("mxnet", "read_params", (".params",))
    assert detect_format("MemNet_M6R6_80C64_GD-0000.params") == "mxnet"
    assert detect_format("x.bin", "mxnet") == "mxnet"
