"""Write MXNet ``.params`` files byte for byte as MXNet's ``NDArray::Save`` does, for the reader's tests.

Written from the format (see ``restorekit/convert/mxnet.py``'s docstring for the layout), not with the
reader's code, so the reader is checked against an encoder it does not share anything with.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

# mshadow type flags by the name of the dtype that holds the values.
TYPE_FLAGS = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.uint8: 3,
    torch.int32: 4,
    torch.int8: 5,
    torch.int64: 6,
    torch.bool: 7,
    torch.int16: 8,
    torch.uint16: 9,
    torch.uint32: 10,
    torch.uint64: 11,
    torch.bfloat16: 12,
}
MAGIC = {"V1": 0xF993FAC8, "V2": 0xF993FAC9, "V3": 0xF993FACA}


def _u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=False)


def _i32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=True)


def _u64(v: int) -> bytes:
    return int(v).to_bytes(8, "little", signed=False)


def _i64(v: int) -> bytes:
    return int(v).to_bytes(8, "little", signed=True)


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.bool:
        return t.numpy().astype(np.uint8).tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def encode_array(t: torch.Tensor, version: str = "V2", *, stype: int = 0, dev: tuple[int, int] = (1, 0)) -> bytes:
    """One NDArray: ``V1``/``V2``/``V3`` or ``legacy`` (no magic, uint32 dims)."""
    out = io.BytesIO()
    shape = tuple(t.shape)
    if version == "legacy":
        out.write(_u32(len(shape)) + b"".join(_u32(d) for d in shape))
    else:
        out.write(_u32(MAGIC[version]))
        if version != "V1":
            out.write(_i32(stype))
        out.write(_u32(len(shape)) + b"".join(_i64(d) for d in shape))
    out.write(_i32(dev[0]) + _i32(dev[1]) + _i32(TYPE_FLAGS[t.dtype]))
    out.write(_raw(t))
    return out.getvalue()


def encode_params(
    arrays: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], version: str = "V2", *, names: bool = True
) -> bytes:
    """The whole NDArray list: header, arrays, names (none for a list saved without names)."""
    items = list(arrays.items()) if isinstance(arrays, Mapping) else [(str(i), a) for i, a in enumerate(arrays)]
    body = b"".join(encode_array(t, version) for _, t in items)
    keys = [k.encode() for k, _ in items] if names else []
    tail = _u64(len(keys)) + b"".join(_u64(len(k)) + k for k in keys)
    return _u64(0x112) + _u64(0) + _u64(len(items)) + body + tail


def write_params(path: Path, arrays: Mapping[str, torch.Tensor], version: str = "V2") -> Path:
    path.write_bytes(encode_params(arrays, version))
    return path
