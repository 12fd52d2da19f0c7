"""One policy for every download (the hub and the authors' upstream URLs): bounded waits, retries, resumption.

Each wait is bounded: connecting and every read give up after ``RESTOREKIT_TIMEOUT`` seconds of silence, and a
whole download, retries included, after ``RESTOREKIT_DEADLINE`` seconds (checked between reads, so a server
that trickles bytes cannot hold it forever). Transient failures (HTTP 408/429/5xx, a dropped or reset
connection, a timeout, a body cut short) are retried ``RESTOREKIT_RETRIES`` times, waiting
``RESTOREKIT_RETRY_WAIT`` seconds and doubling, each retry logged; a cut body resumes with a Range request.
Nothing is retried after the bytes arrived: checking them (a digest mismatch is final) is the caller's job
(:mod:`restorekit.fetch`). The settings are read when a download starts (:func:`restorekit.env.download_settings`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm as _tqdm

from .env import download_settings
from .errors import OutputError, WeightsError

__all__ = ["download", "user_agent"]

logger = logging.getLogger("restorekit")

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_READ_SIZE = 1 << 16


def user_agent() -> str:
    """The User-Agent restorekit sends: ``restorekit/<version>``."""
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


def download(url: str, dest: Path, *, label: str, desc: str, progress: bool | None, headers: dict[str, str]) -> None:
    """Fetch ``url`` into ``dest`` under this module's policy (``label`` names it in the log, ``desc`` on the
    progress bar; ``progress`` None: a bar only on a terminal); raise WeightsError naming ``url`` when it fails."""
    import time

    settings = download_settings()
    timeout, deadline_s, retries, wait = settings.timeout, settings.deadline, settings.retries, settings.retry_wait
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
