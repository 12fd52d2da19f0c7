"""Pretrained weights: resolve a record to a verified local file, read and write our format, load a model.

restorekit's weight files are safetensors whose metadata holds one key, ``"restorekit"``, with the JSON
header ``{"format_version": 1, "arch": ..., "config": {...}, "name": "arch.tag" | null}``: a file alone
is enough to rebuild its network. Our own files never go through pickle; foreign ``.pt``/``.pth``
checkpoints are read with ``torch.load(weights_only=True)`` and converted once.

:func:`resolve` tries, in order, each verified by digest before use: the file bundled in the package,
the Hugging Face cache, a hub download, then the authors' upstream checkpoint (converted once and kept
in ``cache_dir()/converted``). Environment variables are read at call time, never at import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm as _tqdm

from . import registry
from .errors import (
    ChecksumError,
    ConversionError,
    OutputError,
    UnknownModelError,
    WeightsError,
    WeightsNotAvailableError,
)
from .options import RunOptions, run_options
from .registry import ArchSpec, HubSource, UrlSource, WeightRecord

__all__ = [
    "FORMAT_VERSION",
    "cache_dir",
    "hf_cache_dir",
    "is_offline",
    "sha256_file",
    "git_blob_sha1_file",
    "save_weights",
    "read_weights",
    "read_checkpoint",
    "resolve",
    "load_model",
    "build_model",
    "convert",
]

FORMAT_VERSION = 1
HEADER_KEY = "restorekit"
# Module attribute (not a constant baked into functions) so tests can point it at a temporary folder.
BUNDLED_DIR = Path(__file__).parent / "weights"

_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}
# Checkpoint wrappers used by training frameworks; params_ema before params (BasicSR keeps the EMA copy there).
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "net", "generator")
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")

logger = logging.getLogger("restorekit")


# --------------------------------------------------------------------------------------------------- locations


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None  # an empty variable counts as unset


def cache_dir() -> Path:
    """restorekit's cache: ``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``, else ``~/.cache/restorekit``."""
    if (explicit := _env("RESTOREKIT_CACHE")) is not None:
        return Path(explicit).expanduser()
    if (xdg := _env("XDG_CACHE_HOME")) is not None:
        return Path(xdg).expanduser() / "restorekit"
    return Path.home() / ".cache" / "restorekit"


def hf_cache_dir() -> Path | None:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else None (huggingface_hub's default)."""
    if (hub_cache := _env("HF_HUB_CACHE")) is not None:
        return Path(hub_cache).expanduser()
    if (hf_home := _env("HF_HOME")) is not None:
        return Path(hf_home).expanduser() / "hub"
    return None


def _env_flag(*names: str) -> bool:
    """True when any of the environment variables is set to 1/true/yes/on."""
    return any((os.environ.get(name) or "").strip().lower() in _TRUE for name in names)


def is_offline() -> bool:
    """True when ``RESTOREKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on."""
    return _env_flag("RESTOREKIT_OFFLINE", "HF_HUB_OFFLINE")


def _hf_endpoint() -> str | None:
    """``$HF_ENDPOINT`` without a trailing slash; None when unset (huggingface_hub's default applies)."""
    endpoint = _env("HF_ENDPOINT")
    return (endpoint.rstrip("/") or None) if endpoint else None


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


def _sha256_memo(path: Path) -> str:
    key = _memo_key(path)
    with _MEMO_LOCK:
        known = _SHA256_MEMO.get(key)
    if known is not None:
        return known
    digest = sha256_file(key[0])
    with _MEMO_LOCK:
        _SHA256_MEMO[key] = digest
    return digest


def _forget(path: Path) -> None:
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


def _weights_file(path: Path, what: str, error: type[WeightsError] = WeightsError) -> None:
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


def _safetensors_metadata(path: Path) -> dict[str, str] | None:
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
    _weights_file(path, "weights file")
    try:
        header = _parse_header(path, _safetensors_metadata(path))
        state_dict = load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"could not read {path}: {exc}") from exc
    return state_dict, header


def _looks_like_safetensors(path: Path) -> bool:
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


def _strip_module_prefix(state: Mapping[Any, Any]) -> dict[Any, Any]:
    """``state`` without the ``module.`` that DataParallel, DistributedDataParallel and AveragedModel put before
    every key (other keys, and keys that are not strings, stay as they are).

    >>> _strip_module_prefix({"module.conv.weight": 1, "head.bias": 2})
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
    _weights_file(path, "checkpoint", ConversionError)
    suffix = path.suffix.lower()
    fmt = detect_format(path, format)
    if fmt not in ("torch", "safetensors"):
        obj: Any = read_foreign(path, fmt)
    elif fmt == "safetensors" or (
        format == "auto" and suffix not in _PICKLE_SUFFIXES and _looks_like_safetensors(path)
    ):
        try:
            obj = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise ConversionError(f"{path} is not a readable safetensors file ({exc})") from exc
    else:
        obj = _torch_load(path)
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state_dict = _strip_module_prefix(obj)
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


# --------------------------------------------------------------------------------------------------- resolution


def _reason(exc: BaseException) -> str:
    """One line for an attempt's failure, with its explicit causes (huggingface_hub wraps the HTTP error)."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        text = " ".join(str(seen).split())
        if len(text) > 240:
            text = text[:237] + "..."
        if not parts or text not in parts[-1]:  # httpx and huggingface_hub often repeat the same text
            parts.append(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)
        seen = seen.__cause__
    return parts[0] + "".join(f" (caused by {p})" for p in parts[1:])


def _hub_label(hub: HubSource) -> str:
    return f"{hub.repo_id}/{hub.filename}@{(hub.revision or '?')[:12]}"


def _converted_path(record: WeightRecord) -> Path:
    up = record.upstream
    assert up is not None
    pin = up.sha256 or up.git_blob_sha1 or "unpinned"
    if up.companions:  # a new pin of any file the conversion reads is a new converted file
        pin = hashlib.sha1(" ".join([pin, *(c.sha256 or c.git_blob_sha1 or "" for c in up.companions)]).encode())
        pin = pin.hexdigest()
    return cache_dir() / "converted" / f"{record.name}-{pin[:16]}.safetensors"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _hub_repo_cache(hub: HubSource) -> Path:
    root = hf_cache_dir()
    if root is None:
        from huggingface_hub import constants

        root = Path(constants.HF_HUB_CACHE)
    return root / ("models--" + hub.repo_id.replace("/", "--"))


def _cache_locations(record: WeightRecord) -> list[str]:
    out = []
    if record.hub is not None and record.hub.published:
        out.append(str(_hub_repo_cache(record.hub)))
    if record.upstream is not None:
        out.append(str(_converted_path(record)) + " (and its .sha256)")
    return out


def _hf_cached(hub: HubSource) -> Path | None:
    """The snapshot entry of ``hub`` in the Hugging Face cache, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    # Not hf_hub_download(local_files_only=True): in huggingface_hub 2.x that builds its user-agent header
    # first, and the first time in a process this fetches a registry from the hub, so a cache hit would
    # still make an HTTP request. try_to_load_from_cache only looks at the files.
    found = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=hf_cache_dir(), revision=hub.revision)
    return Path(found) if isinstance(found, str) else None  # a str path, None, or the "known absent" marker


def _hf_download(hub: HubSource, *, progress: bool | None) -> Path:
    """Download ``hub`` into the Hugging Face cache (``models--org--name/blobs/<sha256>`` and the snapshot entry
    ``snapshots/<commit>/<filename>`` pointing at it, the layout huggingface_hub reads) and return the entry.

    restorekit fetches the file itself rather than through ``hf_hub_download`` so that every wait is bounded and
    retried by one policy (:func:`_download`): the hub client retries a silent server for minutes. The revision
    is a pinned commit and the digest is known, so one GET of the ``resolve`` URL is all it takes; the bytes
    enter the cache only once they match the record's size and sha256."""
    from urllib.parse import quote

    from huggingface_hub import constants

    assert hub.revision is not None and hub.sha256 is not None
    endpoint = _hf_endpoint() or constants.ENDPOINT.rstrip("/")
    url = f"{endpoint}/{hub.repo_id}/resolve/{hub.revision}/{quote(hub.filename)}"
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    token = _hf_token()
    if token:  # requests drops it on a redirect to another host (the hub's file CDN)
        headers["Authorization"] = f"Bearer {token}"
    storage = _hub_repo_cache(hub)
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=blobs, prefix=f".{hub.sha256[:16]}.", suffix=".incomplete")
    os.close(fd)
    tmp = Path(name)
    try:
        _download(url, tmp, label=f"hub {_hub_label(hub)}", desc=hub.filename, progress=progress, headers=headers)
        size = os.path.getsize(tmp)
        actual = f"{size} bytes" if hub.size is not None and size != hub.size else None
        if actual is None:
            digest = sha256_file(tmp)
            actual = None if digest == hub.sha256 else f"sha256 {digest}"
        if actual is not None:
            expected = f"{hub.size} bytes" if actual.endswith("bytes") else f"sha256 {hub.sha256}"
            raise ChecksumError(
                f"{hub.repo_id}/{hub.filename} (revision {hub.revision}) downloaded from {endpoint} does not match "
                f"the digest pinned for it: expected {expected}, got {actual}. The download was deleted; nothing "
                "entered the cache. Retry later; if it persists, report it (the file or a mirror is wrong)."
            )
        blob = blobs / hub.sha256
        os.replace(tmp, blob)
    finally:
        tmp.unlink(missing_ok=True)
    pointer = storage / "snapshots" / hub.revision / hub.filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    link = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), link)
        os.replace(link, pointer)
    except (
        OSError
    ):  # no symlinks here (some Windows setups): the snapshot holds the file itself, as the hub client does
        link.unlink(missing_ok=True)
        os.replace(blob, pointer)
    with _MEMO_LOCK:
        _SHA256_MEMO[_memo_key(pointer)] = hub.sha256  # verified just now: no second pass over the bytes
    return pointer


def _hf_token(*, saved_login: bool = True) -> str | None:
    """``$HF_TOKEN``, else (with ``saved_login``) the token ``hf auth login`` saved; None when neither is set."""
    if not saved_login:
        return _env("HF_TOKEN")
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - very old huggingface_hub
        return _env("HF_TOKEN")
    try:
        return get_token()
    except Exception:  # an unreadable token file must not stop a public download
        return _env("HF_TOKEN")


def _purge_hub_copy(pointer: Path) -> None:
    """Delete a cached hub file: the blob it points to and the snapshot entry, so nothing poisoned remains."""
    real = Path(os.path.realpath(pointer))
    _forget(pointer)
    for p in (pointer, real):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # keep going: the other entry may still be removable
            logger.warning("could not delete %s: %s", p, exc)


def _hub_digest_problem(path: Path, hub: HubSource) -> tuple[str, str] | None:
    """None when ``path`` matches the record's pins, else (expected, actual) for the first mismatch."""
    if hub.size is not None:
        size = os.path.getsize(path)
        if size != hub.size:
            return f"{hub.size} bytes", f"{size} bytes"
    actual = _sha256_memo(path)
    return None if actual == hub.sha256 else (f"sha256 {hub.sha256}", f"sha256 {actual}")


def _resolve_bundled(record: WeightRecord, attempts: list[str]) -> Path | None:
    bundled = record.bundled
    assert bundled is not None
    path = BUNDLED_DIR / bundled.filename
    if not path.is_file():
        attempts.append(f"bundled {path}: missing (a broken install? reinstall restorekit)")
        return None
    actual = _sha256_memo(path)
    if actual != bundled.sha256:
        raise ChecksumError(
            f"the weights bundled with restorekit for {record.name} ({path}) are damaged: expected sha256 "
            f"{bundled.sha256}, got {actual}. Reinstall restorekit (pip install --force-reinstall restorekit)."
        )
    logger.info("%s: using bundled weights %s", record.name, path)
    return path


def _resolve_hub_cache(record: WeightRecord, hub: HubSource, attempts: list[str]) -> Path | None:
    try:
        path = _hf_cached(hub)
    except (OSError, ValueError) as exc:  # an unreadable cache folder: as good as no cache
        logger.debug("%s: hub cache unreadable (%s)", record.name, _reason(exc))
        return None
    if path is None:
        logger.debug("%s: not in the hub cache", record.name)
        return None
    problem = _hub_digest_problem(path, hub)
    if problem is None:
        logger.info("%s: using hub cache %s", record.name, path)
        return path
    # A damaged cache entry (disk error, interrupted copy) is not the server's fault: drop it and re-fetch.
    logger.warning("%s: cached %s failed verification (expected %s, got %s); deleted it", record.name, path, *problem)
    _purge_hub_copy(path)
    attempts.append(f"hub cache {path}: failed verification (expected {problem[0]}, got {problem[1]}); deleted")
    return None


def _resolve_hub_download(
    record: WeightRecord, hub: HubSource, attempts: list[str], progress: bool | None
) -> Path | None:
    endpoint = _hf_endpoint() or "the default hub endpoint"
    label = _hub_label(hub)
    logger.info("%s: downloading %s from %s", record.name, label, endpoint)
    try:
        path = _hf_download(hub, progress=progress)
    except ChecksumError as exc:  # the server answered, with the wrong bytes: final, never retried or masked
        raise ChecksumError(f"{record.name}: {exc}") from None
    except OutputError:  # the cache disk is full or read-only: another source would fail the same way
        raise
    except Exception as exc:  # 404, 5xx after retries, a stall, a cut body...: record it, try the next source
        logger.info("%s: hub download failed: %s", record.name, _reason(exc))
        attempts.append(f"hub {label} ({endpoint}): {_reason(exc)}")
        return None
    logger.info("%s: downloaded and verified %s", record.name, path)
    return path


def _resolve_converted_cache(record: WeightRecord, attempts: list[str]) -> Path | None:
    path = _converted_path(record)
    sidecar = _sidecar(path)
    if not path.is_file():
        return None
    try:
        expected = sidecar.read_text().split()[0].strip().lower()
    except (OSError, IndexError):
        expected = None
    actual = _sha256_memo(path)
    if expected is not None and actual == expected:
        logger.info("%s: using converted upstream weights %s", record.name, path)
        return path
    logger.warning(
        "%s: converted file %s failed verification against %s; deleting and re-fetching",
        record.name,
        path,
        sidecar.name,
    )
    _forget(path)
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    attempts.append(f"converted cache {path}: failed verification against its .sha256; deleted")
    return None


def _download_suffix(up: UrlSource) -> str:
    from urllib.parse import urlsplit

    suffix = Path(urlsplit(up.url).path).suffix.lower()
    if suffix in _PICKLE_SUFFIXES or suffix == ".safetensors":
        return suffix
    return ".safetensors" if up.format == "safetensors" else ".pt"


def _fetch_url(up: UrlSource, dest: Path, progress: bool | None, desc: str) -> None:
    """Stream ``up.url`` into ``dest`` with bounded waits and retries (:func:`_download`); raise when it fails."""
    # identity: a compressed body would make Content-Length useless for spotting truncation.
    headers = {"Accept-Encoding": "identity", "User-Agent": _user_agent()}
    _download(up.url, dest, label=f"upstream {up.url}", desc=desc, progress=progress, headers=headers)


# --------------------------------------------------------------------------------------------------- downloads
#
# One policy for every download (the hub and upstream URLs). Each wait is bounded: connecting and every read
# give up after RESTOREKIT_TIMEOUT seconds of silence, and a whole download, retries included, after
# RESTOREKIT_DEADLINE seconds (checked between reads, so a server that trickles bytes cannot hold it forever).
# Transient failures (HTTP 408/429/5xx, a dropped or reset connection, a timeout, a body cut short) are retried
# RESTOREKIT_RETRIES times, waiting RESTOREKIT_RETRY_WAIT seconds and doubling, each retry logged; a cut body
# resumes with a Range request. Nothing is retried after the bytes arrived: a digest mismatch is final.

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_READ_SIZE = 1 << 16
_DEFAULTS = {
    "RESTOREKIT_TIMEOUT": 30.0,
    "RESTOREKIT_DEADLINE": 1800.0,
    "RESTOREKIT_RETRIES": 3,
    "RESTOREKIT_RETRY_WAIT": 1.0,
}


def _setting(name: str) -> float:
    raw = _env(name)
    default = _DEFAULTS[name]
    if raw is None:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    minimum = 0.0 if name in ("RESTOREKIT_RETRIES", "RESTOREKIT_RETRY_WAIT") else 1e-3
    if not (value >= minimum) or value == float("inf"):
        raise WeightsError(
            f"{name}={raw!r} is not a usable number of seconds (or retries); unset it or use e.g. {default}"
        )
    return value


def _user_agent() -> str:
    from ._version import __version__

    return f"restorekit/{__version__}"


class _Transient(Exception):
    """A failure worth another attempt (the bytes received so far are kept and resumed from)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _http_status_text(response: Any) -> str:
    what = f"HTTP {response.status_code} {response.reason or ''}".strip()
    # The hub says which entry or revision is missing in headers; keep it in the message.
    extra = [response.headers.get(k) for k in ("X-Error-Code", "X-Error-Message")]
    return what + "".join(f" ({e})" for e in extra if e)


def _network_text(exc: BaseException, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"could not connect within {timeout:g} s"
    if isinstance(exc, (requests.exceptions.ReadTimeout, TimeoutError)) or "timed out" in str(exc).lower():
        return f"no data for {timeout:g} s (the server stalled)"
    text = " ".join(str(exc).split())
    if "reset by peer" in text.lower() or "connectionreseterror" in text.lower():
        return "the server reset the connection before answering"
    return f"{type(exc).__name__}: {text[:200]}"


def _is_transient_network(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, (requests.exceptions.Timeout, TimeoutError)):
        return True
    text = str(exc).lower()
    # No network at all (no route, no name) or nothing listening: retrying only delays the fallback.
    if any(
        k in text
        for k in (
            "name or service not known",
            "nodename nor servname",
            "name resolution",
            "connection refused",
            "network is unreachable",
            "no route to host",
        )
    ):
        return False
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, OSError))


def _download(url: str, dest: Path, *, label: str, desc: str, progress: bool | None, headers: dict[str, str]) -> None:
    """Fetch ``url`` into ``dest`` under the policy above; raise WeightsError naming ``url`` when it fails."""
    import time

    timeout = _setting("RESTOREKIT_TIMEOUT")
    deadline_s = _setting("RESTOREKIT_DEADLINE")
    retries = int(_setting("RESTOREKIT_RETRIES"))
    wait = _setting("RESTOREKIT_RETRY_WAIT")
    deadline = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            _download_once(url, dest, desc=desc, progress=progress, headers=headers, timeout=timeout, deadline=deadline)
            if attempt > 1:
                logger.info("%s: downloaded on attempt %d", label, attempt)
            return
        except _Transient as exc:
            why, retry_after = str(exc), exc.retry_after
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WeightsError(
                f"GET {url}: gave up after {deadline_s:g} s (RESTOREKIT_DEADLINE), {attempt} attempt(s); last: {why}"
            )
        if attempt > retries:
            raise WeightsError(f"GET {url}: {why}; failed {attempt} times (RESTOREKIT_RETRIES={retries}), giving up")
        pause = min(wait * 2 ** (attempt - 1), 30.0, remaining)
        if retry_after is not None:
            pause = min(max(pause, retry_after), 30.0, remaining)
        logger.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", label, why, pause, attempt + 1, retries + 1)
        time.sleep(pause)


def _cut_short(exc: BaseException, received: int, total: int | None, timeout: float) -> str:
    text = str(exc)
    of = f" of {total}" if total is not None else ""
    if "IncompleteRead" in text or "prematurely" in text:
        return f"truncated download: the connection closed after {received}{of} bytes"
    if "reset" in text.lower():
        return f"the connection was reset after {received}{of} bytes"
    return f"connection lost after {received}{of} bytes ({_network_text(exc, timeout)})"


def _download_once(
    url: str, dest: Path, *, desc: str, progress: bool | None, headers: dict[str, str], timeout: float, deadline: float
) -> None:
    import time

    import requests

    have = dest.stat().st_size if dest.exists() else 0
    request_headers = dict(headers)
    if have:
        request_headers["Range"] = f"bytes={have}-"  # a previous attempt was cut short: ask for the rest
    budget = max(1e-3, min(timeout, deadline - time.monotonic()))
    try:
        response = requests.get(url, stream=True, timeout=(budget, budget), headers=request_headers)
    except requests.exceptions.RequestException as exc:
        if _is_transient_network(exc):
            raise _Transient(_network_text(exc, budget)) from exc
        raise WeightsError(f"GET {url}: {_network_text(exc, budget)}") from exc
    with response:
        if response.status_code == 416 and have:  # the partial file is useless: start over
            dest.unlink()
            raise _Transient("the server refused to resume (HTTP 416)")
        if response.status_code >= 400:
            text = _http_status_text(response)
            if response.status_code in _TRANSIENT_STATUS or response.status_code >= 500:
                after = response.headers.get("Retry-After", "")
                raise _Transient(text, retry_after=float(after) if after.isdigit() else None)
            raise WeightsError(f"GET {url}: {text}")
        start = 0
        if response.status_code == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            start = int(match.group(1)) if match else -1
            if start != have:
                dest.unlink(missing_ok=True)
                raise _Transient(f"the server resumed at byte {start}, not {have}")
        length = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        total = start + int(length) if length and length.isdigit() and not encoded else None
        received = start
        read = getattr(response.raw, "read1", None)
        chunks = (
            iter(lambda: read(_READ_SIZE, decode_content=True), b"")
            if read is not None
            else response.iter_content(chunk_size=8192)  # urllib3 1.x: no read1, small reads instead
        )
        with (
            open(dest, "ab" if start else "wb") as f,
            _tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=None if progress is None else not progress,  # None: only on a terminal
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = next(chunks, b"")
                except Exception as exc:  # urllib3's ProtocolError and ReadTimeoutError, requests' wrappers, OSError
                    raise _Transient(_cut_short(exc, received, total, budget)) from exc
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:  # a full or read-only cache disk: the network is not to blame, no retry
                    from .image import _write_failure

                    raise OutputError(_write_failure(dest, exc)) from exc
                received += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise _Transient(f"still downloading at the deadline ({received} bytes received)")
    if total is not None and received != total:
        raise _Transient(f"truncated download: received {received} of {total} bytes")


def _verify_upstream(path: Path, up: UrlSource, record: WeightRecord) -> None:
    checks = []
    if up.size is not None:
        checks.append(("size", str(up.size), str(os.path.getsize(path))))
    if up.git_blob_sha1:
        checks.append(("git blob sha1", up.git_blob_sha1, git_blob_sha1_file(path)))
    if up.sha256:
        checks.append(("sha256", up.sha256, sha256_file(path)))
    for kind, expected, actual in checks:
        if expected.lower() != actual:
            raise ChecksumError(
                f"{up.url} (upstream checkpoint of {record.name}) does not match its pinned {kind}: expected "
                f"{expected}, got {actual}. The download was deleted. If the authors replaced the file, the "
                "record needs updating; otherwise retry later."
            )


def _resolve_upstream_download(record: WeightRecord, attempts: list[str], progress: bool | None) -> Path | None:
    up = record.upstream
    assert up is not None
    spec = registry.get_arch(record.arch)
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if up.companions:
        # The reader finds the companions beside the file by name: keep the upstream names, in a folder of its own.
        tmp = Path(tempfile.mkdtemp(dir=downloads, prefix=f"{record.name}-")) / _url_name(up)
    else:
        fd, name = tempfile.mkstemp(dir=downloads, prefix=f"{record.name}-", suffix=_download_suffix(up))
        os.close(fd)
        tmp = Path(name)
    try:
        logger.info("%s: downloading upstream checkpoint %s", record.name, up.url)
        try:
            _fetch_url(up, tmp, progress, desc=record.name)
        except OutputError:  # the cache disk is full or read-only: not a network failure
            raise
        except Exception as exc:  # HTTP error, refused connection, truncated body: record it and give up on this source
            logger.info("%s: upstream download failed: %s", record.name, _reason(exc))
            attempts.append(f"upstream {up.url}: {_reason(exc)}")
            return None
        _verify_upstream(tmp, up, record)
        if not _fetch_companions(record, tmp.parent, attempts, progress):
            return None
        trusted = ""
        if not up.pinned:  # trust on first use: what was downloaded is recorded, nothing could be checked
            source = sha256_file(tmp)
            trusted = f"# source {up.url} sha256 {source} (unpinned: trusted on first use)\n"
            logger.warning(
                "%s: %s publishes no checksum; trusting it on first use, sha256 %s", record.name, up.url, source
            )
        config = {**spec.default_config, **record.config}
        state_dict = read_checkpoint(tmp, spec, config, format=up.format)
        out = _converted_path(record)
        digest = save_weights(out, state_dict, arch=record.arch, config=config, name=record.name)
        _atomic_write(_sidecar(out), f"{digest}  {out.name}\n{trusted}".encode())
        logger.info("%s: converted %s to %s", record.name, up.url, out)
        return out
    finally:
        tmp.unlink(missing_ok=True)
        if up.companions:
            shutil.rmtree(tmp.parent, ignore_errors=True)


def _url_name(up: UrlSource) -> str:
    from urllib.parse import unquote, urlsplit

    return Path(unquote(urlsplit(up.url).path)).name or "download"


def _fetch_companions(record: WeightRecord, folder: Path, attempts: list[str], progress: bool | None) -> bool:
    """Download and verify ``record.upstream.companions`` into ``folder`` (False, with the reason, on failure)."""
    assert record.upstream is not None
    for extra in record.upstream.companions:
        dest = folder / _url_name(extra)
        logger.info("%s: downloading %s (needed beside %s)", record.name, extra.url, _url_name(record.upstream))
        try:
            _fetch_url(extra, dest, progress, desc=f"{record.name} {dest.name}")
        except Exception as exc:  # as for the main file: record it and give up on this source
            logger.info("%s: upstream download failed: %s", record.name, _reason(exc))
            attempts.append(f"upstream {extra.url}: {_reason(exc)}")
            return False
        _verify_upstream(dest, extra, record)
    return True


def _unpublished_message(record: WeightRecord) -> str:
    notes = f" ({record.notes})" if record.notes else ""
    return (
        f"weights for {record.name} are not published yet{notes}; pass weights=PATH to use your own, "
        "or pretrained=False for random init"
    )


def _not_available_message(record: WeightRecord, attempts: list[str], offline: bool) -> str:
    where = ", ".join(_cache_locations(record)) or str(cache_dir())
    tried = "".join(f"\n  - {a}" for a in attempts)
    if offline:
        return (
            f"weights for {record.name} are not in the cache and downloads are disabled "
            f"(HF_HUB_OFFLINE/RESTOREKIT_OFFLINE). On a machine with network run `restorekit download "
            f"{record.name}` and copy {where}, or pass weights=PATH." + (f"\nTried:{tried}" if tried else "")
        )
    return (
        f"could not get the weights for {record.name}; every source failed:{tried}\n"
        f"Check the network (and HF_ENDPOINT if set) and retry, or run `restorekit download {record.name}` "
        f"on a machine with network and copy {where}, or pass weights=PATH."
    )


def _unpinned_message(record: WeightRecord, attempts: list[str]) -> str:
    up = record.upstream
    assert up is not None
    tried = "".join(f"\n  - {a}" for a in attempts)
    return (
        f"the weights for {record.name} come from {up.url}, which publishes no checksum, so restorekit cannot "
        "verify the download and does not fetch it by default. To trust it on first use (the sha256 of what "
        "is downloaded is logged and kept next to the converted file), set RESTOREKIT_ALLOW_UNPINNED=1 or pass "
        f"allow_unpinned=True; or download it yourself, check it, run `restorekit convert FILE "
        f"{record.tag}.safetensors --model {record.name}` and pass weights={record.tag}.safetensors."
        + (f"\nTried:{tried}" if tried else "")
    )


def _allow_unpinned(explicit: bool | None) -> bool:
    if explicit is not None:
        return explicit
    return _env_flag("RESTOREKIT_ALLOW_UNPINNED")


def resolve(record: WeightRecord, *, progress: bool | None = None, allow_unpinned: bool | None = None) -> Path:
    """Return the path of a verified restorekit safetensors file for ``record``, fetching it if needed.

    ``allow_unpinned`` (default: ``$RESTOREKIT_ALLOW_UNPINNED``) permits downloading an upstream file that
    has no published digest (``UrlSource(pinned=False)``), trusting it on first use. ``progress`` shows the
    downloads' progress bars (None: when stderr is a terminal), as everywhere (:mod:`restorekit.options`).
    """
    options = run_options("cpu", allow_unpinned=allow_unpinned, progress=progress)  # checks the flags; no device
    progress, allow_unpinned = options.progress, options.allow_unpinned
    if not record.published:
        raise WeightsNotAvailableError(_unpublished_message(record))
    attempts: list[str] = []
    offline = is_offline()
    if record.bundled is not None and (path := _resolve_bundled(record, attempts)) is not None:
        return path
    hub = record.hub if record.hub is not None and record.hub.published else None
    if hub is not None:
        if (path := _resolve_hub_cache(record, hub, attempts)) is not None:
            return path
        if not offline and (path := _resolve_hub_download(record, hub, attempts, progress)) is not None:
            return path
    if record.upstream is not None:
        if (path := _resolve_converted_cache(record, attempts)) is not None:
            return path
        if not offline and not record.upstream.pinned and not _allow_unpinned(allow_unpinned):
            raise WeightsNotAvailableError(_unpinned_message(record, attempts))
        if not offline and (path := _resolve_upstream_download(record, attempts, progress)) is not None:
            return path
    raise WeightsNotAvailableError(_not_available_message(record, attempts, offline))


# --------------------------------------------------------------------------------------------------- models


def build_model(arch: str, config: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build an untrained network: ``spec.build(**{**spec.default_config, **config})``."""
    spec = registry.get_arch(arch)
    return spec.build(**{**spec.default_config, **(config or {})})


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _load_state(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    error: type[WeightsError] = WeightsError,
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file vs network): {_few(shapes)}")
        raise error(f"weights from {source} do not fit the {type(model).__name__} network: " + "; ".join(parts))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise error(f"weights from {source} could not be loaded: {exc}") from exc


def _read_user_weights(
    path: Path, record: WeightRecord, spec: ArchSpec
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A local file passed as ``weights=``: ``(state_dict, header)``, header None for a foreign checkpoint."""
    _weights_file(path, "weights file")
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(path):
        try:
            metadata = _safetensors_metadata(path)
        except Exception as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from exc
        if metadata and HEADER_KEY in metadata:
            state_dict, header = read_weights(path)
            if header["arch"] != record.arch:
                raise WeightsError(
                    f"{path} holds weights for architecture {header['arch']!r}, but {record.name} is "
                    f"a {record.arch!r} model; use restorekit.load_model({str(path)!r}) to build "
                    "the network the file describes"
                )
            # The file's config builds the network (a smaller or fine-tuned variant is fine), but it must not
            # contradict what callers rely on from the record: its scale.
            if spec.config_for_scale is not None:
                full = {**spec.default_config, **header["config"]}
                wrong = {k: full.get(k) for k, v in spec.config_for_scale(record.scale).items() if full.get(k) != v}
                if wrong:
                    raise WeightsError(
                        f"{path} was saved for {wrong}, but {record.name} is a x{record.scale} model; "
                        f"pick the matching model or use restorekit.load_model({str(path)!r})"
                    )
            return state_dict, header
    return read_checkpoint(path, spec, record.config), None


def _load_file_model(path: Path, options: RunOptions) -> torch.nn.Module:
    state_dict, header = read_weights(path)
    model = build_model(header["arch"], header["config"])
    _load_state(model, state_dict, str(path))
    record = None
    if header.get("name"):  # a file of a registered model: its record says which dtypes are validated
        try:
            record = registry.get_record(header["name"])
        except UnknownModelError:
            record = None
    return model.to(options.device, options.dtype_for(record)).eval()


_NOTICED: set[str] = set()


def _notice_license(record: WeightRecord) -> None:
    """Warn once per process about license terms a user must not miss (``WeightRecord.license_notice``)."""
    if record.license_notice and record.name not in _NOTICED:
        _NOTICED.add(record.name)
        warnings.warn(f"{record.name}: {record.license_notice}", UserWarning, stacklevel=3)


def load_model(
    name: str | os.PathLike[str],
    task: str | None = None,
    *,
    scale: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    allow_unpinned: bool | None = None,
    progress: bool | None = None,
) -> torch.nn.Module:
    """Build a registered model (or the one a restorekit ``.safetensors`` file describes) in eval mode.

    ``weights=PATH`` loads a local file instead of the published weights (ours or a foreign checkpoint);
    ``pretrained=False`` leaves the network randomly initialised. ``device``, ``dtype``, ``allow_unpinned`` and
    ``progress`` mean what they mean for :class:`~restorekit.Restorer` (:mod:`restorekit.options`):
    ``device="auto"`` is cuda, then mps, then cpu; ``dtype="auto"`` float32 unless the record validates a half
    precision on an accelerator; ``allow_unpinned`` (None: ``$RESTOREKIT_ALLOW_UNPINNED``) permits weights
    whose upstream publishes no checksum; ``progress`` shows the download's progress bar (None: when stderr
    is a terminal).

    The bare network does none of the :class:`~restorekit.Restorer`'s work (padding, tiling, colour
    conversion, clamping). It takes and returns (N, C, H, W) tensors in its architecture's value range,
    ``restorekit.registry.get_arch(arch).value_range`` (also ``model_info(name)["value_range"]``):

    - ``msrn``: RGB in **0..255** (the authors' convention; the mean shift is inside the network), output
      ``scale`` times larger;
    - ``memnet``: one channel (grey or the Y of YCbCr) in 0..1; returns a ``MemNetOutput`` whose ``.output``
      is the image (``.block_outputs`` the per-block estimates); SR models expect the bicubic-upsampled image;
    - ``mprnet``: RGB in 0..1, sides a multiple of 8; returns ``[final, stage 2, stage 1]`` images;
    - ``dsrir``: RGB in 0..1, sides a multiple of 8; returns ``([img3, img2, img1], [var3, var2, var1])``,
      ``img3`` the restoration and ``var*`` per-stage uncertainty (log-scale) maps;
    - ``spatial_rnn``: RGB in 0..1 (plus a mask channel for inpainting and colourisation), output in 0..1.

    ``restorekit.registry.get_arch(arch).select_output`` picks the image out of a multi-output network's result.

    >>> net = load_model("msrn.sr_x2", pretrained=False, device="cpu")
    >>> net(torch.rand(1, 3, 8, 8) * 255).shape
    torch.Size([1, 3, 16, 16])
    """
    options = run_options(device, dtype, allow_unpinned, progress)
    if isinstance(name, os.PathLike) or str(name).lower().endswith(".safetensors"):
        if weights is not None:
            raise ValueError("pass a weights file either as the model name or as weights=, not both")
        path = Path(name)
        _weights_file(path, "weights file")
        return _load_file_model(path, options)
    if weights is not None and not pretrained:
        raise ValueError("weights= and pretrained=False contradict each other; pass one of them")
    record = registry.get_record(name, task, scale=scale)
    want = options.dtype_for(record)
    spec = registry.get_arch(record.arch)
    config: Mapping[str, Any] = record.config
    state_dict: dict[str, torch.Tensor] | None = None
    if weights is not None:
        source = str(weights)
        state_dict, header = _read_user_weights(Path(weights), record, spec)
        if header is not None:
            config = header["config"]
    elif pretrained:
        path = resolve(record, allow_unpinned=options.allow_unpinned, progress=options.progress)
        source = f"{record.name} ({path})"
        _notice_license(record)
        state_dict, header = read_weights(path)
        if header["arch"] != record.arch:
            raise WeightsError(f"{path} holds weights for {header['arch']!r}, not {record.arch!r} ({record.name})")
    model = build_model(record.arch, config)
    if state_dict is not None:
        _load_state(model, state_dict, source)
    return model.to(options.device, want).eval()


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    model: str | None = None,
    arch: str | None = None,
    config: Mapping[str, Any] | None = None,
    format: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a local authors' checkpoint to a restorekit safetensors file; returns the written path.

    With ``model=`` the architecture and config come from that record (``config`` overrides keys);
    otherwise pass ``arch=`` and, if it differs from the defaults, ``config=``. ``format`` names the
    file's format (``auto``: from its suffix; see :data:`restorekit.convert.FORMATS`). ``dst`` is a
    ``.safetensors`` path or an existing folder; an existing file is replaced only with ``overwrite=True``,
    and the file is written atomically (a failure leaves no half-written file).
    """
    from .errors import InputError, OutputExistsError

    name: str | None = None
    if model is not None:
        record = registry.get_record(model)
        if arch is not None and arch != record.arch:
            raise ValueError(f"{model} is a {record.arch!r} model, not {arch!r}")
        arch, name = record.arch, record.name
        cfg = {**record.config, **(config or {})}
    elif arch is not None:
        cfg = dict(config or {})
    else:
        raise ValueError("pass model='arch.tag' or arch='name' to say what the checkpoint is")
    out = Path(dst)
    if out.is_dir():
        out = out / f"{name or arch}.safetensors"
    # Checked before any work: the output is restorekit's own format, and nothing is replaced unasked.
    if out.suffix.lower() != ".safetensors":
        raise InputError(
            f"{out}: converted weights are safetensors; name the output with a .safetensors suffix (or give a folder)"
        )
    if out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve():
        raise InputError(f"{out} is the checkpoint being converted; choose another output path")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    spec = registry.get_arch(arch)
    full = {**spec.default_config, **cfg}
    state_dict = read_checkpoint(src, spec, full, format=format)
    # Fail now, not at the first load: the converted weights must fit the network exactly.
    _load_state(build_model(arch, full), state_dict, str(src), error=ConversionError)
    save_weights(out, state_dict, arch=arch, config=full, name=name, overwrite=overwrite)
    return out
