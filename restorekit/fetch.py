"""Resolve a weight record to a verified local restorekit file: bundled, Hugging Face cache, hub, converted, upstream.

:func:`resolve` tries, in order, each verified by digest before use: the file bundled in the package
(:data:`BUNDLED_DIR`), the Hugging Face cache, a hub download, the authors' upstream checkpoint converted
earlier (kept in ``cache_dir()/converted`` with a ``.sha256`` beside it), then a download of that upstream
checkpoint, converted once. Downloads follow one policy (:mod:`restorekit.download`); the locations and flags
come from the environment at call time (:mod:`restorekit.env`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from . import registry
from .download import download, user_agent
from .env import cache_dir, hf_cache_dir, hf_endpoint, hf_token, is_offline, unpinned_allowed
from .errors import ChecksumError, OutputError, WeightsNotAvailableError
from .image import atomic_write
from .options import run_options
from .registry import HubSource, UrlSource, WeightRecord
from .weightfile import (
    PICKLE_SUFFIXES,
    forget_sha256,
    git_blob_sha1_file,
    known_sha256,
    read_checkpoint,
    remember_sha256,
    save_weights,
    sha256_file,
)

__all__ = ["resolve", "available_locally", "BUNDLED_DIR", "converted_path"]

# Module attribute (not a constant baked into functions) so tests can point it at a temporary folder.
BUNDLED_DIR = Path(__file__).parent / "weights"

logger = logging.getLogger("restorekit")


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


def converted_path(record: WeightRecord) -> Path:
    """Where the converted upstream checkpoint of ``record`` is kept, named by the pins of what it was made from."""
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
        out.append(str(converted_path(record)) + " (and its .sha256)")
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
    retried by one policy (:func:`download`): the hub client retries a silent server for minutes. The revision
    is a pinned commit and the digest is known, so one GET of the ``resolve`` URL is all it takes; the bytes
    enter the cache only once they match the record's size and sha256."""
    from urllib.parse import quote

    from huggingface_hub import constants

    assert hub.revision is not None and hub.sha256 is not None
    endpoint = hf_endpoint() or constants.ENDPOINT.rstrip("/")
    url = f"{endpoint}/{hub.repo_id}/resolve/{hub.revision}/{quote(hub.filename)}"
    headers = {"User-Agent": user_agent(), "Accept-Encoding": "identity"}
    token = hf_token()
    if token:  # requests drops it on a redirect to another host (the hub's file CDN)
        headers["Authorization"] = f"Bearer {token}"
    storage = _hub_repo_cache(hub)
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=blobs, prefix=f".{hub.sha256[:16]}.", suffix=".incomplete")
    os.close(fd)
    tmp = Path(name)
    try:
        download(url, tmp, label=f"hub {_hub_label(hub)}", desc=hub.filename, progress=progress, headers=headers)
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
    remember_sha256(pointer, hub.sha256)  # verified just now: no second pass over the bytes
    return pointer


def _purge_hub_copy(pointer: Path) -> None:
    """Delete a cached hub file: the blob it points to and the snapshot entry, so nothing poisoned remains."""
    real = Path(os.path.realpath(pointer))
    forget_sha256(pointer)
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
    actual = known_sha256(path)
    return None if actual == hub.sha256 else (f"sha256 {hub.sha256}", f"sha256 {actual}")


def _resolve_bundled(record: WeightRecord, attempts: list[str]) -> Path | None:
    bundled = record.bundled
    assert bundled is not None
    path = BUNDLED_DIR / bundled.filename
    if not path.is_file():
        attempts.append(f"bundled {path}: missing (a broken install? reinstall restorekit)")
        return None
    actual = known_sha256(path)
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
    endpoint = hf_endpoint() or "the default hub endpoint"
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
    path = converted_path(record)
    sidecar = _sidecar(path)
    if not path.is_file():
        return None
    try:
        expected = sidecar.read_text().split()[0].strip().lower()
    except (OSError, IndexError):
        expected = None
    actual = known_sha256(path)
    if expected is not None and actual == expected:
        logger.info("%s: using converted upstream weights %s", record.name, path)
        return path
    logger.warning(
        "%s: converted file %s failed verification against %s; deleting and re-fetching",
        record.name,
        path,
        sidecar.name,
    )
    forget_sha256(path)
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    attempts.append(f"converted cache {path}: failed verification against its .sha256; deleted")
    return None


def _download_suffix(up: UrlSource) -> str:
    from urllib.parse import urlsplit

    suffix = Path(urlsplit(up.url).path).suffix.lower()
    if suffix in PICKLE_SUFFIXES or suffix == ".safetensors":
        return suffix
    return ".safetensors" if up.format == "safetensors" else ".pt"


def _fetch_url(up: UrlSource, dest: Path, progress: bool | None, desc: str) -> None:
    """Stream ``up.url`` into ``dest`` with bounded waits and retries (:func:`download`); raise when it fails."""
    # identity: a compressed body would make Content-Length useless for spotting truncation.
    headers = {"Accept-Encoding": "identity", "User-Agent": user_agent()}
    download(up.url, dest, label=f"upstream {up.url}", desc=desc, progress=progress, headers=headers)


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
        out = converted_path(record)
        digest = save_weights(out, state_dict, arch=record.arch, config=config, name=record.name)
        sidecar = f"{digest}  {out.name}\n{trusted}"
        atomic_write(_sidecar(out), lambda f: f.write(sidecar.encode()), overwrite=True)
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
    return unpinned_allowed() if explicit is None else explicit


def available_locally(record: WeightRecord) -> Path | None:
    """The verified local file :func:`resolve` would use for ``record`` without any download, or None.

    Looks where :func:`resolve` looks before it downloads, in the same order (the bundled file, the Hugging
    Face cache, the converted upstream checkpoint in ``cache_dir()/converted``), checks each against its
    digest as :func:`resolve` does, and never touches the network; unlike :func:`resolve` it deletes nothing
    (a damaged file is just not available). ``restorekit download NAME`` makes a record available.
    """
    if not record.published:
        return None
    if record.bundled is not None:
        path = BUNDLED_DIR / record.bundled.filename
        if path.is_file() and known_sha256(path) == record.bundled.sha256:
            return path
    hub = record.hub if record.hub is not None and record.hub.published else None
    if hub is not None:
        try:
            path = _hf_cached(hub)
        except (OSError, ValueError):  # an unreadable cache folder: as good as no cache
            path = None
        if path is not None and _hub_digest_problem(path, hub) is None:
            return path
    if record.upstream is not None:
        path = converted_path(record)
        try:
            expected = _sidecar(path).read_text().split()[0].strip().lower() if path.is_file() else None
        except (OSError, IndexError):
            expected = None
        if expected is not None and known_sha256(path) == expected:
            return path
    return None


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
