"""Read a Caffe ``.caffemodel`` without Caffe or a compiled protobuf: the wire format, decoded here.

A ``.caffemodel`` is one serialized ``caffe.NetParameter`` message. Only the fields that carry weights
are decoded; everything else is skipped by its wire type. Field numbers, from BVLC/caffe
``src/caffe/proto/caffe.proto``:

- ``NetParameter``: ``layer = 100`` (``LayerParameter``), legacy ``layers = 2`` (``V1LayerParameter``)
- ``LayerParameter``: ``name = 1``, ``blobs = 7``
- ``V1LayerParameter``: ``name = 4``, ``blobs = 6``, and the even older ``layer = 1`` (``V0LayerParameter``:
  ``name = 1``, ``blobs = 50``)
- ``BlobProto``: ``shape = 7`` (``BlobShape``: ``dim = 1``, packed int64), ``data = 5`` (packed float),
  ``double_data = 8`` (packed double), legacy 4-D ``num = 1``, ``channels = 2``, ``height = 3``, ``width = 4``

Repeated numbers are read packed (one length-delimited field, what Caffe writes) or unpacked (one field
per value; protobuf parsers must accept both).

The result is flat: ``{"<layer name>/<blob index>": tensor}``, e.g. ``"conv1/0"`` (weights) and
``"conv1/1"`` (bias), in the blob's own shape and float32 (double blobs are converted). Layers without
blobs (ReLU, Eltwise, Concat, ...) do not appear. An architecture's ``filter_checkpoint`` maps these
names onto its modules (see ``restorekit/archs/memnet.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import ConversionError

__all__ = ["read_caffemodel"]

# Wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _Corrupt(Exception):
    """Malformed wire data; turned into a ConversionError naming the file."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise _Corrupt("a number runs past the end of the data")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("a number is longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)``: an int for varints, the raw bytes for the others."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            size = 8
        elif wire == _FIXED32:
            size = 4
        else:  # 3/4: groups, which no Caffe message uses; 6/7 do not exist
            raise _Corrupt(f"wire type {wire} in field {number}")
        if pos + size > end:
            raise _Corrupt(f"field {number} ({size} bytes) runs past the end of the data")
        yield number, wire, buf[pos : pos + size]
        pos += size


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(wire: int, value: int | memoryview) -> list[int]:
    """A repeated int64: one unpacked varint, or a packed run of them."""
    if wire == _VARINT:
        assert isinstance(value, int)
        return [_signed64(value)]
    if wire != _LEN:
        raise _Corrupt(f"an integer field with wire type {wire}")
    assert isinstance(value, memoryview)
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed64(v))
    return out


def _reals(wire: int, value: int | memoryview, dtype: str) -> np.ndarray:
    """A repeated float/double: packed (one length-delimited run) or one unpacked fixed-width value."""
    width = np.dtype(dtype).itemsize
    expected = _FIXED32 if width == 4 else _FIXED64
    if wire not in (_LEN, expected) or isinstance(value, int):
        raise _Corrupt(f"a {dtype} field with wire type {wire}")
    if len(value) % width:
        raise _Corrupt(f"{len(value)} bytes of packed {dtype} values is not a multiple of {width}")
    return np.frombuffer(value, dtype=np.dtype(dtype).newbyteorder("<"))


def _blob(buf: memoryview) -> torch.Tensor:
    dims: list[int] | None = None
    legacy: dict[int, int] = {}
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in _fields(buf):
        if number == 7:  # shape: BlobShape
            if wire != _LEN or isinstance(value, int):
                raise _Corrupt("BlobProto.shape is not a message")
            dims = dims or []
            for n2, w2, v2 in _fields(value):
                if n2 == 1:
                    dims.extend(_ints(w2, v2))
        elif number == 5:
            floats.append(_reals(wire, value, "f4"))
        elif number == 8:
            doubles.append(_reals(wire, value, "f8"))
        elif number in (1, 2, 3, 4) and wire == _VARINT:
            assert isinstance(value, int)
            legacy[number] = _signed64(value)
    if floats and doubles:
        raise _Corrupt("a blob holds both float and double data")
    values = np.concatenate(floats or doubles) if (floats or doubles) else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy.get(i, 0) for i in (1, 2, 3, 4)] if legacy else [values.size]
    if any(d < 0 for d in dims):
        raise _Corrupt(f"negative blob dimension in {dims}")
    if math.prod(dims) != values.size:
        raise _Corrupt(f"blob shape {dims} needs {math.prod(dims)} values, the data has {values.size}")
    return torch.from_numpy(values.astype(np.float32).reshape(dims))


def _text(value: int | memoryview, what: str) -> str:
    if isinstance(value, int):
        raise _Corrupt(f"{what} is not a string")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"{what} is not UTF-8 text") from None


def _layer(buf: memoryview, name_field: int, blobs_field: int) -> tuple[str | None, list[torch.Tensor]]:
    name: str | None = None
    blobs: list[torch.Tensor] = []
    for number, wire, value in _fields(buf):
        if number == name_field and wire == _LEN:
            name = _text(value, "a layer name")
        elif number == blobs_field:
            if wire != _LEN or isinstance(value, int):
                raise _Corrupt("a layer's blobs field is not a message")
            blobs.append(_blob(value))
        elif name_field == 4 and number == 1 and wire == _LEN and not isinstance(value, int):
            v0_name, v0_blobs = _layer(value, 1, 50)  # V1LayerParameter.layer: a V0LayerParameter inside
            name = name or v0_name
            blobs.extend(v0_blobs)
    return name, blobs


def read_caffemodel(path: Path) -> dict[str, torch.Tensor]:
    """``{"<layer>/<blob index>": float32 tensor}`` for every layer of a ``.caffemodel`` that has blobs.

    >>> sd = read_caffemodel(Path("MemNet_M6R6_80C64_GD.caffemodel"))  # doctest: +SKIP
    >>> sd["conv1/0"].shape, sd["bn_conv1/2"]                          # doctest: +SKIP
    (torch.Size([64, 1, 3, 3]), tensor([999.9832]))
    """
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    hint = (
        "Pass the trained weights (.caffemodel, a binary NetParameter), not a .prototxt or a solver state, "
        "and check that the download is complete"
    )
    out: dict[str, torch.Tensor] = {}
    names: set[str] = set()
    n_layers = 0
    try:
        for number, wire, value in _fields(data):
            if number not in (100, 2):
                continue
            if wire != _LEN or isinstance(value, int):
                raise _Corrupt(f"NetParameter field {number} is not a message")
            name, blobs = _layer(value, *((1, 7) if number == 100 else (4, 6)))
            n_layers += 1
            if not blobs:
                continue
            if not name:
                raise _Corrupt(f"layer #{n_layers} has {len(blobs)} blob(s) but no name")
            if name in names:
                raise _Corrupt(f"two layers with weights are named {name!r}")
            names.add(name)
            for i, blob in enumerate(blobs):
                out[f"{name}/{i}"] = blob
    except _Corrupt as exc:
        raise ConversionError(f"{path} is not a readable Caffe model ({exc}). {hint}.") from None
    if not n_layers:
        raise ConversionError(f"{path} holds no Caffe layers. {hint}.")
    if not out:
        raise ConversionError(f"{path} has {n_layers} Caffe layers but no weights (a net definition?). {hint}.")
    return out
