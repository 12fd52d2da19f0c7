"""Read MXNet ``.params`` files (``mx.nd.save``, ``Module.save_checkpoint``) in numpy, without MXNet.

A ``.params`` file is MXNet's NDArray list, little-endian:

* the list: ``uint64`` magic ``0x112``, ``uint64`` reserved, ``uint64`` array count, the arrays, then the
  names: ``uint64`` count (0, or one per array) and each name as ``uint64`` length + UTF-8 bytes;
* one array, by version (its first ``uint32``):

  - V2 ``0xF993FAC9`` and V3 ``0xF993FACA``: ``int32`` storage type (0 dense; 1 row_sparse and 2 csr are
    refused), the shape, the context (``int32`` device type, ``int32`` device id), the ``int32`` type flag,
    then the values in C order. V3 is MXNet 2's NumPy-shape form: ``ndim`` 0 is a scalar and -1 an
    unknown shape; in V2 ``ndim`` 0 is an empty (uninitialised) array with nothing after the shape;
  - V1 ``0xF993FAC8``: as V2 without the storage type;
  - legacy (no magic): the first ``uint32`` is ``ndim`` itself, followed by ``ndim`` ``uint32`` dims;
  - the shape of V1/V2/V3: ``uint32`` ``ndim`` and ``ndim`` ``int64`` dims;
* the type flags are mshadow's: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64,
  7 bool, 8 int16, 9 uint16, 10 uint32, 11 uint64, 12 bfloat16.

The layout follows MXNet's ``NDArray::Save``/``Load`` and is checked against files MXNet wrote
(``tests/test_mxnet.py``). Names keep MXNet's ``arg:`` (arguments: weights, biases, BatchNorm gamma/beta)
and ``aux:`` (auxiliary states: BatchNorm moving mean/var) prefixes; mapping them is the architecture's
``filter_checkpoint``.

Some values a network needs live in the graph, not in the ``.params`` file (a ``_mul_scalar`` node's
scalar, a BatchNorm's ``eps``). MXNet saves the graph beside the parameters under the same prefix
(``NAME-symbol.json`` beside ``NAME-0000.params``); when that file is there, its bytes are returned too,
under :data:`SYMBOL_KEY` as a uint8 tensor (readers return a flat ``{key: tensor}`` mapping), and
:func:`symbol_of` decodes it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConversionError

__all__ = ["SYMBOL_KEY", "read_params", "symbol_of", "symbol_path"]

SYMBOL_KEY = "mxnet:symbol.json"  # the graph's bytes in what read_params returns (no MXNet name has this form)

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_STORAGE = {0: "dense", 1: "row_sparse", 2: "csr"}
# mshadow type flag -> (numpy dtype, name); bfloat16 has no numpy dtype and is read as its 16 raw bits.
_DTYPES = {
    0: ("<f4", "float32"),
    1: ("<f8", "float64"),
    2: ("<f2", "float16"),
    3: ("u1", "uint8"),
    4: ("<i4", "int32"),
    5: ("i1", "int8"),
    6: ("<i8", "int64"),
    7: ("u1", "bool"),
    8: ("<i2", "int16"),
    9: ("<u2", "uint16"),
    10: ("<u4", "uint32"),
    11: ("<u8", "uint64"),
    12: ("<i2", "bfloat16"),
}
_MAX_NDIM = 32  # MXNet's own limit; a larger count means the bytes are not an array header
_MAX_DEV_TYPE = 6  # Context::kMaxDevType: cpu 1, gpu 2, cpu_pinned 3, cpu_shared 5
_CHECKPOINT_NAME = re.compile(r"^(?P<prefix>.+)-\d{4}$")  # Module.save_checkpoint: PREFIX-EPOCH.params


class _Reader:
    """A cursor over the file's bytes whose every read says what it was reading when the bytes run out."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ConversionError(
                f"{self.path}: truncated MXNet .params file: {what} needs {n} bytes at offset {self.pos}, but the "
                f"file has {len(self.data)} bytes in all. Download it again (and check its digest)."
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values[0] if len(values) == 1 else values

    def corrupt(self, what: str) -> ConversionError:
        return ConversionError(
            f"{self.path}: not a valid MXNet .params file ({what}, at offset {self.pos}); it may be corrupt, or "
            "another format (restorekit convert --from names the format: torch, safetensors, caffe, paddle, mxnet)"
        )


def _shape(r: _Reader, what: str, *, numpy_shape: bool) -> tuple[int, ...] | None:
    """A V1/V2/V3 shape (``uint32`` ndim + int64 dims); None for an empty or unknown one."""
    ndim = r.unpack("i" if numpy_shape else "I", f"{what}: ndim")
    if numpy_shape and ndim == -1:
        return None
    if ndim < 0 or ndim > _MAX_NDIM:
        raise r.corrupt(f"{what} claims {ndim} dimensions")
    if ndim == 0 and not numpy_shape:
        return None  # V1/V2: ndim 0 is an uninitialised array
    dims = r.unpack(f"{ndim}q", f"{what}: dims") if ndim else ()
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if numpy_shape and -1 in dims:
        return None  # V3: an unknown dimension
    if any(d < 0 for d in dims):
        raise r.corrupt(f"{what} has a negative dimension {dims}")
    return dims


def _array(r: _Reader, index: int) -> tuple[torch.Tensor | None, str]:
    """One NDArray: (tensor or None for an empty array, its version for messages)."""
    import numpy as np

    what = f"array {index}"
    magic = r.unpack("I", f"{what}: magic")
    if magic in (V2_MAGIC, V3_MAGIC):
        version = "V2" if magic == V2_MAGIC else "V3"
        stype = r.unpack("i", f"{what}: storage type")
        if stype != 0:
            kind = _STORAGE.get(stype)
            if kind is None:
                raise r.corrupt(f"{what} has an unknown storage type {stype}")
            raise ConversionError(
                f"{r.path}: {what} is a {kind} (sparse) array; restorekit reads dense arrays only. In MXNet, "
                "convert it with arr.tostype('default') and save the parameters again."
            )
        shape = _shape(r, what, numpy_shape=magic == V3_MAGIC)
    elif magic == V1_MAGIC:
        version, shape = "V1", _shape(r, what, numpy_shape=False)
    elif magic <= _MAX_NDIM:
        # The legacy form has no magic: what was read is the number of dimensions, each a uint32.
        version = "legacy"
        dims = r.unpack(f"{magic}I", f"{what}: dims") if magic else ()
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        shape = dims if magic else None
    else:
        raise r.corrupt(f"{what} starts with 0x{magic:08X}, which is no NDArray version MXNet writes")
    if shape is None:
        return None, version
    dev_type, _dev_id = r.unpack("ii", f"{what}: context")
    if not 1 <= dev_type <= _MAX_DEV_TYPE:
        raise r.corrupt(f"{what} names device type {dev_type}")
    flag = r.unpack("i", f"{what}: type flag")
    if flag not in _DTYPES:
        raise r.corrupt(f"{what} has type flag {flag}, which is none of mshadow's 0-12")
    np_dtype, name = _DTYPES[flag]
    count = 1
    for d in shape:
        count *= d
    itemsize = np.dtype(np_dtype).itemsize
    raw = r.take(count * itemsize, f"{what} ({name}, shape {list(shape)}): values")
    values = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
    if name == "bool":
        return torch.from_numpy(values != 0), version
    tensor = torch.from_numpy(values)
    return (tensor.view(torch.bfloat16) if name == "bfloat16" else tensor), version


def _names(r: _Reader, count: int) -> list[str]:
    n = r.unpack("Q", "the name count")
    if n not in (0, count):
        raise r.corrupt(f"{n} names for {count} arrays")
    names = []
    for i in range(n):
        length = r.unpack("Q", f"name {i}: length")
        if length > len(r.data) - r.pos:
            raise r.corrupt(f"name {i} claims {length} bytes")
        raw = r.take(length, f"name {i}")
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise r.corrupt(f"name {i} is not UTF-8") from None
    return names if n else [str(i) for i in range(count)]


def symbol_path(params: str | Path) -> Path:
    """Where MXNet keeps the graph of a parameter file: ``P-symbol.json`` for ``P-0000.params`` (or ``P.params``)."""
    params = Path(params)
    match = _CHECKPOINT_NAME.match(params.stem)
    return params.with_name(f"{match['prefix'] if match else params.stem}-symbol.json")


def _read_symbol(path: Path) -> torch.Tensor:
    raw = path.read_bytes()
    try:
        graph = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} (the MXNet graph beside the .params file) is not valid JSON: {exc}") from exc
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ConversionError(f"{path} is not an MXNet graph (a JSON object with a 'nodes' list)")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def read_params(path: Path) -> dict[str, torch.Tensor]:
    """Read an MXNet ``.params`` file as ``{name: tensor}`` (names as stored, ``arg:``/``aux:`` included).

    Every dense dtype keeps its type (bfloat16 and bool included). When the graph ``PREFIX-symbol.json`` is
    beside the file, its bytes come back under :data:`SYMBOL_KEY` (decode them with :func:`symbol_of`).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"could not read {path}: {exc}") from exc
    r = _Reader(data, path)
    if len(data) < 24:
        raise ConversionError(
            f"{path} has {len(data)} bytes, fewer than an MXNet .params header (24): empty or truncated"
        )
    magic, _reserved, count = r.unpack("QQQ", "the header")
    if magic != LIST_MAGIC:
        raise ConversionError(
            f"{path} is not an MXNet .params file: it starts with 0x{magic:X}, not the NDArray-list magic 0x112. "
            "Name the file's format with --from (torch, safetensors, caffe, paddle, mxnet)."
        )
    if count > (len(data) - r.pos) // 4:  # every array takes at least 4 bytes: a bad count, not a big file
        raise r.corrupt(f"the header claims {count} arrays")
    arrays = [_array(r, i) for i in range(count)]
    names = _names(r, count)
    if r.pos != len(data):
        raise r.corrupt(f"{len(data) - r.pos} bytes follow the names")
    out: dict[str, torch.Tensor] = {}
    for name, (tensor, version) in zip(names, arrays):
        if name in out:
            raise ConversionError(f"{path}: the name {name!r} appears twice; it is not a state dict MXNet saves")
        if tensor is None:
            raise ConversionError(
                f"{path}: {name!r} is an empty (uninitialised, {version}) array with no values; save the "
                "parameters again after initialising the network"
            )
        out[name] = tensor
    if not out:
        raise ConversionError(f"{path} holds no arrays")
    graph = symbol_path(path)
    if graph.is_file():
        out[SYMBOL_KEY] = _read_symbol(graph)
    return out


def symbol_of(state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MXNet graph that :func:`read_params` found beside the file, decoded; None when there was none."""
    raw = state_dict.get(SYMBOL_KEY)
    if raw is None:
        return None
    if not isinstance(raw, torch.Tensor) or raw.dtype != torch.uint8:
        raise ConversionError(f"{SYMBOL_KEY!r} must hold the graph's bytes (a uint8 tensor)")
    return json.loads(bytes(raw.numpy().tobytes()))
