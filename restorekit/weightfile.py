"""restorekit's weight file: write and read our safetensors format, read any checkpoint as a state dict, digests.

A restorekit weight file is a safetensors file whose metadata holds one key, ``"restorekit"``, with the JSON
header ``{"format_version": 1, "arch": ..., "config": {...}, "name": "arch.tag" | null}``: a file alone is
enough to rebuild its network. Our own files never go through pickle; foreign ``.pt``/``.pth`` checkpoints
are read with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`), the authors' Caffe, Paddle and
MXNet files by :mod:`restorekit.convert`.

>>> import tempfile, torch
>>> path = tempfile.mkdtemp() + "/w.safetensors"
>>> digest = save_weights(path, {"w": torch.ones(2)}, arch="msrn", config={})
>>> read_weights(path)[1]["arch"], digest == sha256_file(path)
('msrn', True)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import ConversionError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from .registry import ArchSpec

__all__ = [
    "FORMAT_VERSION",
    "HEADER_KEY",
    "PICKLE_SUFFIXES",
    "save_weights",
    "read_weights",
    "read_checkpoint",
    "sha256_file",
    "git_blob_sha1_file",
    "known_sha256",
    "remember_sha256",
    "forget_sha256",
    "check_weights_path",
    "looks_like_safetensors",
    "safetensors_metadata",
    "strip_module_prefix",
]

FORMAT_VERSION = 1
HEADER_KEY = "restorekit"
# The suffixes of pickled checkpoints (torch.save and the training frameworks built on it).
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")

_CHUNK = 1 << 20
# Checkpoint wrappers used by training frameworks; params_ema before params (BasicSR keeps the EMA copy there).
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "net", "generator")


# --------------------------------------------------------------------------------------------------- digests


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1_file(path: str | os.PathLike[str]) -> str:
    """The git blob id of a file, ``sha1(b"blob <size>\\0" + bytes)``, streamed."""
    digest = hashlib.sha1()
    digest.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# (real path, size, mtime_ns) -> sha256: a file verified once in this process is not hashed again.
_SHA256_MEMO: dict[tuple[str, int, int], str] = {}
_MEMO_LOCK = threading.Lock()


def _memo_key(path: Path) -> tuple[str, int, int]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, st.st_size, st.st_mtime_ns


def known_sha256(path: Path) -> str:
    """The sha256 of ``path``, hashed once per process: a file that has not changed since is not read again."""
    key = _memo_key(path)
    with _MEMO_LOCK:
        known = _SHA256_MEMO.get(key)
    if known is not None:
        return known
    digest = sha256_file(key[0])
    with _MEMO_LOCK:
        _SHA256_MEMO[key] = digest
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Record ``digest`` as the sha256 of ``path`` as it is now (bytes just verified need no second pass)."""
    key = _memo_key(path)
    with _MEMO_LOCK:
        _SHA256_MEMO[key] = digest


def forget_sha256(path: Path) -> None:
    """Drop what is remembered about ``path`` (before it is deleted or replaced)."""
    real = os.path.realpath(path)
    with _MEMO_LOCK:
        for key in [k for k in _SHA256_MEMO if k[0] == real]:
            del _SHA256_MEMO[key]


# --------------------------------------------------------------------------------------------------- file format


def _atomic_write(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, then a rename (never half a file);
    without ``overwrite`` an existing file is left alone (OutputExistsError)."""
    from .image import atomic_write

    atomic_write(path, lambda f: f.write(data), overwrite=overwrite)


def check_weights_path(path: Path, what: str, error: type[WeightsError] = WeightsError) -> None:
    """Refuse, with the reason, a path that is not a regular file (missing, a folder, a pipe or device)."""
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a folder, not a file; pass the weight file inside it (e.g. a .safetensors)")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a named pipe, device or socket); pass a weight file")


def _header_json(arch: str, config: Mapping[str, Any], name: str | None) -> str:
    header = {"format_version": FORMAT_VERSION, "arch": arch, "config": dict(config), "name": name}
    try:
        # Sorted, compact JSON: the same weights and config must give byte-identical files.
        return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"config for {arch!r} is not JSON-serialisable: {exc}") from exc


def save_weights(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    arch: str,
    config: Mapping[str, Any],
    name: str | None = None,
    overwrite: bool = True,
) -> str:
    """Write ``state_dict`` as a restorekit safetensors file (atomically) and return its sha256.

    ``overwrite=False`` refuses to replace an existing file (:class:`~restorekit.errors.OutputExistsError`)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        # A fresh contiguous copy of every tensor: safetensors refuses views and tensors sharing storage
        # (tied weights), and a copy is what makes the bytes independent of how the tensors were made.
        tensors[key] = value.detach().to("cpu").clone().contiguous()
    data = save(tensors, metadata={HEADER_KEY: _header_json(arch, config, name)})
    _atomic_write(Path(path), data, overwrite=overwrite)
    return hashlib.sha256(data).hexdigest()


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The string metadata of a safetensors file (None when it has none), without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _parse_header(path: Path, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(HEADER_KEY)
    if raw is None:
        raise WeightsError(
            f"{path} is a safetensors file but not a restorekit one (no {HEADER_KEY!r} metadata); "
            "read it with read_checkpoint() or convert it with restorekit.weights.convert()"
        )
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: the {HEADER_KEY!r} metadata is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: the {HEADER_KEY!r} metadata is not a JSON object")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise WeightsError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{path} uses restorekit weights format {version}; this restorekit reads up to "
            f"{FORMAT_VERSION}. Upgrade restorekit (pip install -U restorekit)."
        )
    if not isinstance(header.get("arch"), str) or not isinstance(header.get("config"), dict):
        raise WeightsError(f"{path}: the {HEADER_KEY!r} header needs a string 'arch' and an object 'config'")
    if header.get("name") is not None and not isinstance(header["name"], str):
        raise WeightsError(f"{path}: the header's 'name' must be a string or null")
    return header


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a restorekit safetensors file: ``(state_dict, header)``; WeightsError if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_weights_path(path, "weights file")
    try:
        header = _parse_header(path, safetensors_metadata(path))
        state_dict = load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"could not read {path}: {exc}") from exc
    return state_dict, header


def looks_like_safetensors(path: Path) -> bool:
    """True when the file starts like a safetensors file, whatever its suffix."""
    # A safetensors file starts with an 8-byte little-endian header length and then the JSON header.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, judged by its first bytes; None when it could be one."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "is empty (0 bytes)"
    # torch.save writes a zip archive; older torch and pickle.dump write a pickle, which starts with the PROTO
    # opcode (protocols 2-5) or, for protocol 1, with an empty dict or list. torch's weights-only reader takes
    # nothing else, so anything else is not a checkpoint, whatever its suffix.
    if head[:4] == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5) or head[:1] in (b"}", b"]"):
        return None
    return f"does not start like any checkpoint (its first bytes are {head.hex()})"


def _torch_load(path: Path) -> Any:
    import pickle

    why = _not_a_checkpoint(path)
    if why is not None:
        from .convert import FORMATS

        raise ConversionError(
            f"{path} {why}: it is not a checkpoint in any format restorekit reads (a PyTorch .pt/.pth, "
            f"safetensors, {', '.join(f for f in FORMATS if f not in ('torch', 'safetensors'))}); it may be damaged "
            "or another kind of file. Check the path, or re-download the file."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
        detail = " ".join(match.group(1).split()) if match else " ".join(text.split())[:300]
        asked = re.search(r"(?:unsupported|Unsupported global:) GLOBAL [\w.]+", text)
        if asked is not None and asked.group(0) not in detail:
            detail = asked.group(0)
        if asked is None:  # no class or function was asked for: the pickle itself is malformed
            raise ConversionError(
                f"{path}: not a readable PyTorch checkpoint: its pickle is damaged or truncated ({detail}); "
                "re-download or re-save it"
            ) from exc
        raise ConversionError(
            f"{path}: refused for safety. restorekit reads pickled checkpoints only with "
            f"torch.load(weights_only=True), and this file needs more than tensors and plain containers "
            f"({detail}). In a trusted environment, re-save just the state dict (torch.save(model.state_dict())) "
            "or export it to safetensors."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc


def _unwrap(obj: Any) -> Any:
    # Training scripts nest the weights ({'state_dict': ...}, {'params_ema': ...}, {'model': {'net': ...}}).
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def strip_module_prefix(state: Mapping[Any, Any]) -> dict[Any, Any]:
    """``state`` without the ``module.`` that DataParallel, DistributedDataParallel and AveragedModel put before
    every key (other keys, and keys that are not strings, stay as they are).

    >>> strip_module_prefix({"module.conv.weight": 1, "head.bias": 2})
    {'conv.weight': 1, 'head.bias': 2}
    """
    return {(k.removeprefix("module.") if isinstance(k, str) else k): v for k, v in state.items()}


def read_checkpoint(
    path: str | os.PathLike[str], spec: ArchSpec, config: Mapping[str, Any], *, format: str = "auto"
) -> dict[str, torch.Tensor]:
    """Read any checkpoint as a state dict for ``spec``.

    ``format``: ``"auto"`` (by suffix and content), ``"torch"`` (a weights-only pickle), ``"safetensors"``
    (ours or bare), or a foreign format from :data:`restorekit.convert.FORMATS` (``"caffe"``, ``"paddle"``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .convert import detect_format, read_foreign

    path = Path(path)
    check_weights_path(path, "checkpoint", ConversionError)
    suffix = path.suffix.lower()
    fmt = detect_format(path, format)
    if fmt not in ("torch", "safetensors"):
        obj: Any = read_foreign(path, fmt)
    elif fmt == "safetensors" or (format == "auto" and suffix not in PICKLE_SUFFIXES and looks_like_safetensors(path)):
        try:
            obj = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise ConversionError(f"{path} is not a readable safetensors file ({exc})") from exc
    else:
        obj = _torch_load(path)
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state_dict = strip_module_prefix(obj)
    if spec.filter_checkpoint is not None:
        state_dict = dict(spec.filter_checkpoint(state_dict, {**spec.default_config, **config}))
    bad = [
        f"{k} ({type(v).__name__})"
        for k, v in state_dict.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        raise ConversionError(
            f"{path}: after unwrapping, these entries are not tensors: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    if not state_dict:
        raise ConversionError(f"{path} contains no tensors")
    return state_dict
