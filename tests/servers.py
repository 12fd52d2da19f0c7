"""Real HTTP servers on 127.0.0.1 for the network tests: a hub look-alike and a plain file server.

Both run a ``ThreadingHTTPServer`` on port 0 in a daemon thread, log every request, and have failure
switches (an HTTP status for the next requests, a truncated body, different bytes than expected, a server
that goes silent, a connection reset, a body that trickles in).

``HubServer`` speaks the part of the hub protocol that ``huggingface_hub.hf_hub_download`` uses:
``HEAD`` then ``GET /{repo_id}/resolve/{revision}/{filename}``. The HEAD answer must carry
``X-Repo-Commit`` (the commit the revision resolves to) and an ``ETag`` (the blob name in the cache);
the size comes from ``Content-Length`` (or ``X-Linked-Size`` on a redirect). Errors are typed by the
``X-Error-Code`` header (``EntryNotFound``, ``RevisionNotFound``, ``RepoNotFound``). No ``X-Xet-*``
header is ever sent, so the client never takes the Xet download path. With ``lfs_redirects`` on, files
are answered like the real hub's LFS files: a 302 carrying ``X-Linked-Etag``/``X-Linked-Size`` to a
"CDN" URL on another origin (``localhost`` instead of ``127.0.0.1``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "FileServer"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, framed by Content-Length or chunked transfer encoding (b"" when there is none)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: _BaseServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-body (the truncation tests do it on purpose) are not errors here.
        import sys

        # The reset switch closes sockets under the handler on purpose: OSErrors here are the test's doing.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length framing, like a real server
    timeout = 10  # an idle keep-alive connection ends its thread after this many seconds
    server: _HTTPServer

    def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
        self.server.owner._dispatch(self, "HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner._dispatch(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.owner._dispatch(self, "POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.owner._dispatch(self, "PUT")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _BaseServer:
    """Start/stop, request log and failure switches shared by both servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.request_headers: list[dict[str, str]] = []  # headers of each logged request, names lower-cased
        self.request_bodies: list[bytes] = []  # body of each logged request (b"" for HEAD/GET)
        self._failures: list[tuple[int, str | None]] = []  # (status, method or None) consumed one per request
        self._truncations: list[int] = []  # body bytes to send before closing, one per body response
        # Network faults, one per request (or body response): ("stall", seconds, after_bytes),
        # ("reset", 0, after_bytes), ("trickle", seconds between pieces, piece size). after_bytes None: before
        # the status line, else after the headers and that many body bytes.
        self._faults: list[tuple[str, float, int | None]] = []
        self._released = threading.Event()  # set by stop(): stalled handlers wake up and hang up
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> _BaseServer:
        if self._httpd is None:
            self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
            self._httpd.owner = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{type(self).__name__}-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._released.set()
        httpd.shutdown()
        # Handler threads may sit in recv() on keep-alive connections: shut those sockets so they end now.
        with httpd.sockets_lock:
            open_sockets = list(httpd.open_sockets)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    # switches --------------------------------------------------------------------------------------------
    def fail_with(self, status: int, times: int = 1, *, method: str | None = None) -> None:
        """Answer the next ``times`` requests (only ``method`` ones, if given) with ``status``."""
        with self._lock:
            self._failures.extend([(status, method)] * times)

    def truncate_next(self, n_bytes: int, times: int = 1) -> None:
        """For the next ``times`` body responses: announce the full Content-Length, send ``n_bytes``, close."""
        with self._lock:
            self._truncations.extend([n_bytes] * times)

    def stall_next(self, seconds: float, times: int = 1, *, after_bytes: int | None = None) -> None:
        """Go silent for ``seconds`` on the next ``times`` requests, then hang up: before answering at all
        (``after_bytes`` None: a server that accepts connections and never answers), or after the headers and
        ``after_bytes`` bytes of the body."""
        with self._lock:
            self._faults.extend([("stall", float(seconds), after_bytes)] * times)

    def reset_next(self, times: int = 1, *, after_bytes: int | None = None) -> None:
        """Reset (TCP RST) the connection of the next ``times`` requests: before answering, or mid-body."""
        with self._lock:
            self._faults.extend([("reset", 0.0, after_bytes)] * times)

    def trickle_next(self, delay: float, piece: int = 64, times: int = 1) -> None:
        """Send the next ``times`` bodies ``piece`` bytes at a time, ``delay`` seconds apart: never silent for
        long, but slow without end (what a total deadline is for)."""
        with self._lock:
            self._faults.extend([("trickle", float(delay), piece)] * times)

    def reset(self) -> None:
        """Clear every failure switch, corruption and the request log."""
        with self._lock:
            self._failures.clear()
            self._truncations.clear()
            self._faults.clear()
            self._reset_extra()
            self.requests.clear()
            self.request_headers.clear()
            self.request_bodies.clear()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()
            self.request_bodies.clear()

    def _reset_extra(self) -> None:
        pass

    # request handling ------------------------------------------------------------------------------------
    def _dispatch(self, handler: _Handler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        body = _read_body(handler)
        with self._lock:
            self.requests.append((method, path))
            self.request_headers.append({k.lower(): v for k, v in handler.headers.items()})
            self.request_bodies.append(body)
            failure = next((i for i, (_, m) in enumerate(self._failures) if m in (None, method)), None)
            status = self._failures.pop(failure)[0] if failure is not None else None
            fault = self._faults[0] if self._faults and self._faults[0][0] != "trickle" else None
            if fault is not None and fault[2] is None:
                self._faults.pop(0)
            else:
                fault = None
        if fault is not None:  # before the status line: nothing at all is answered
            self._break(handler, fault[0], fault[1])
            return
        if status is not None:
            self._send(handler, method, status, f"injected failure {status}\n".encode(), {})
            return
        self._route(handler, method, path, body)

    def _route(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        raise NotImplementedError

    def _break(self, handler: _Handler, kind: str, seconds: float) -> None:
        """Stall (then hang up) or reset the connection now."""
        handler.close_connection = True
        if kind == "stall":
            self._released.wait(seconds)
            return
        sock = handler.connection
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: "connection reset by peer".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _send(self, handler: _Handler, method: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Send a complete response (a HEAD gets the headers only, with the body's length)."""
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)

    def _send_file(self, handler: _Handler, method: str, data: bytes, headers: dict[str, str]) -> None:
        """Send ``data`` honouring a ``Range: bytes=a-[b]`` request header and the truncation switch."""
        total = len(data)
        status, start, end = 200, 0, total  # end exclusive
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        match = _RANGE.match(handler.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(total, int(match.group(2)) + 1) if match.group(2) else total
            if start >= total or start >= end:
                self._send(handler, method, 416, b"", {**headers, "Content-Range": f"bytes */{total}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        body = data[start:end]
        cut = None
        fault = None
        if method == "GET":
            with self._lock:
                cut = self._truncations.pop(0) if self._truncations else None
                fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            kind, seconds, amount = fault
            handler.send_response(status)
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            try:
                if kind == "trickle":
                    for i in range(0, len(body), int(amount or 1)):
                        handler.wfile.write(body[i : i + int(amount or 1)])
                        handler.wfile.flush()
                        if self._released.wait(seconds):
                            break
                    return
                handler.wfile.write(body[: int(amount or 0)])
                handler.wfile.flush()
            except OSError:  # the client gave up: what the test wanted
                handler.close_connection = True
                return
            self._break(handler, kind, seconds)
            return
        if cut is None:
            self._send(handler, method, status, body, headers)
            return
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:cut])
        # Closing right after the partial body is what a dropped connection looks like to the client.
        handler.close_connection = True


class FileServer(_BaseServer):
    """Serves fixed bytes at arbitrary paths (an upstream download site)."""

    def __init__(self) -> None:
        super().__init__()
        self._files: dict[str, bytes] = {}
        self._corrupt: dict[str, bytes] = {}

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its full URL."""
        path = "/" + path.lstrip("/")
        with self._lock:
            self._files[path] = bytes(data)
        return self.url + path

    def url_for(self, path: str) -> str:
        return self.url + "/" + path.lstrip("/")

    def corrupt(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``path`` instead of the bytes added (until :meth:`reset`)."""
        with self._lock:
            self._corrupt["/" + path.lstrip("/")] = bytes(data)

    def _reset_extra(self) -> None:
        self._corrupt.clear()

    def _route(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        with self._lock:
            data = self._corrupt.get(path, self._files.get(path))
        if data is None:
            self._send(handler, method, 404, b"not found\n", {"Content-Type": "text/plain"})
            return
        self._send_file(handler, method, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'})


class HubServer(_BaseServer):
    """The hub's download protocol (see the module docstring) and the upload calls of ``huggingface_hub``.

    Uploads (``HfApi.create_repo`` + ``upload_folder``/``create_commit`` on the LFS path, i.e. with
    ``HF_HUB_DISABLE_XET`` set; this server does not speak Xet storage):

    * ``POST /api/repos/create`` ``{"name", "organization", "type", ...}``: a new repo with one commit holding
      ``.gitattributes``; 409 when it exists;
    * ``POST /api/validate-yaml`` ``{"content", "repoType"}``: the README's front matter must be a YAML object;
    * ``POST /api/models/{repo}/preupload/{rev}`` ``{"files": [{"path", "sample", "size"}]}``: says per file
      ``uploadMode`` ``lfs`` (binary suffixes, NUL bytes in the sample, or >= 10 MiB) or ``regular``, and the
      ``oid`` of the file already at that path (sha256 for LFS, git blob sha1 otherwise);
    * ``POST /{repo}.git/info/lfs/objects/batch`` (git-lfs batch API): an ``upload`` action to
      ``PUT /lfs-upload/{oid}`` on this server plus a ``verify`` action, or no action when the blob is stored;
    * ``PUT /lfs-upload/{oid}``: the bytes, refused unless their sha256 and size match what the batch announced;
    * ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: ``header``, then ``file`` with base64 content,
      ``lfsFile`` pointers to uploaded blobs, ``deletedFile``/``deletedFolder``): a new commit on ``main``
      that the download routes serve at once, pinned by the ``commitOid`` it answers.

    With ``token`` set, every POST (not the LFS PUT, which the hub also presigns) needs
    ``Authorization: Bearer <token>``; otherwise 401.
    """

    _RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
    _CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")
    _PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<revision>[^/]+)$")
    _COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<revision>[^/]+)$")
    _LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
    _LFS_VERIFY = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/verify$")
    _LFS_PUT = re.compile(r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$")
    LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".png", ".jpg", ".npz", ".zip", ".gz")
    LFS_THRESHOLD = 10 * 1024 * 1024

    def __init__(self, *, lfs_redirects: bool = False, token: str | None = None) -> None:
        super().__init__()
        self.lfs_redirects = lfs_redirects
        self.token = token  # required (as a Bearer token) by the upload routes when set
        # repo_id -> [(commit, {filename: bytes})], oldest first; "main" is the last commit.
        self._repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self._messages: dict[str, str] = {}  # commit -> commit message, for uploaded commits
        self._corrupt: dict[tuple[str, str], bytes] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> bytes, for the CDN route and uploaded LFS objects
        self._announced: dict[str, int] = {}  # LFS oid -> size promised by a batch request, awaiting its PUT

    def add_file(self, repo_id: str, filename: str, data: bytes) -> str:
        """Commit ``data`` as ``filename`` in ``repo_id``; returns the new commit's 40-hex id (deterministic)."""
        with self._lock:
            history = self._repos.get(repo_id, [])
            parent = history[-1][0] if history else ""
            commit = hashlib.sha1(
                f"{repo_id}\n{parent}\n{filename}\n{hashlib.sha256(data).hexdigest()}".encode()
            ).hexdigest()
            return self._commit_locked(repo_id, commit, {filename: bytes(data)}, ())

    def _commit_locked(self, repo_id: str, commit: str, added: dict[str, bytes], deleted: tuple[str, ...]) -> str:
        """Append a commit to ``repo_id`` (the caller holds the lock): the head's files - ``deleted`` + ``added``."""
        history = self._repos.setdefault(repo_id, [])
        files = dict(history[-1][1]) if history else {}
        for path in deleted:
            files.pop(path, None)
        files.update(added)
        history.append((commit, files))
        for data in added.values():
            self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a commit id or ``main``); empty if unknown."""
        with self._lock:
            history = self._repos.get(repo_id, [])
            snap = (
                history[-1] if history and revision == "main" else next((h for h in history if h[0] == revision), None)
            )
            return dict(snap[1]) if snap else {}

    def commit_message(self, commit: str) -> str | None:
        with self._lock:
            return self._messages.get(commit)

    def corrupt(self, repo_id: str, filename: str, data: bytes) -> None:
        """Serve ``data`` for ``filename`` at every revision (until :meth:`reset`)."""
        with self._lock:
            self._corrupt[(repo_id, filename)] = bytes(data)
            self._blobs[hashlib.sha256(data).hexdigest()] = bytes(data)

    def _reset_extra(self) -> None:
        self._corrupt.clear()

    # uploads ---------------------------------------------------------------------------------------------
    def _json(self, handler: _Handler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(handler, "POST", status, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, handler: _Handler, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._json(handler, status, {"error": message}, headers)

    def _authorized(self, handler: _Handler) -> bool:
        if self.token is None or handler.headers.get("Authorization", "") == f"Bearer {self.token}":
            return True
        self._error(handler, 401, "Invalid credentials in Authorization header")
        return False

    def _head_files(self, handler: _Handler, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """The head commit and files of ``repo_id`` for a write to ``revision`` (only ``main``), or answer 404."""
        with self._lock:
            history = list(self._repos.get(repo_id, []))
        if not history:
            self._error(handler, 404, "Repository not found", "RepoNotFound")
            return None
        if revision != "main":
            self._error(
                handler, 404, f"Invalid rev id: {revision} (this server writes to main only)", "RevisionNotFound"
            )
            return None
        return history[-1]

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return path.lower().endswith(self.LFS_SUFFIXES) or size >= self.LFS_THRESHOLD or b"\0" in sample

    def _route_upload(self, handler: _Handler, method: str, path: str, body: bytes) -> bool:
        """Answer an upload call; False when ``path`` is not one (the download routes take it)."""
        put = self._LFS_PUT.match(path)
        if method == "PUT" and put:
            oid = put.group("oid")
            with self._lock:
                size = self._announced.get(oid)
            if size is None:
                self._error(handler, 404, f"no LFS upload was announced for {oid}")
            elif len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                self._error(handler, 400, f"uploaded bytes do not match oid {oid} and size {size}")
            else:
                with self._lock:
                    self._blobs[oid] = body
                    self._announced.pop(oid, None)
                self._send(handler, method, 200, b"", {})
            return True
        if method != "POST":
            return False
        if path == "/api/repos/create":
            if self._authorized(handler):
                self._create_repo(handler, body)
            return True
        if path == "/api/validate-yaml":
            if self._authorized(handler):
                self._validate_yaml(handler, body)
            return True
        for pattern, action in (
            (self._PREUPLOAD, self._preupload),
            (self._COMMIT, self._commit),
            (self._LFS_BATCH, self._lfs_batch),
            (self._LFS_VERIFY, self._lfs_verify),
        ):
            match = pattern.match(path)
            if match:
                if self._authorized(handler):
                    try:
                        payload = body if action == self._commit else json.loads(body or b"{}")
                    except ValueError:
                        self._error(handler, 400, "request body is not JSON")
                        return True
                    action(handler, match.groupdict(), payload)
                return True
        return False

    def _create_repo(self, handler: _Handler, body: bytes) -> None:
        request = json.loads(body or b"{}")
        if request.get("type", "model") not in (None, "model"):
            self._error(handler, 400, "this server hosts model repositories only")
            return
        if not request.get("organization") or not request.get("name"):
            self._error(handler, 400, "name and organization (the namespace) are required")
            return
        repo_id = f"{request['organization']}/{request['name']}"
        url = f"{self.url}/{repo_id}"
        with self._lock:
            if repo_id in self._repos:
                exists = True
            else:
                exists = False
                attributes = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in self.LFS_SUFFIXES)
                commit = hashlib.sha1(f"{repo_id}\ninitial commit".encode()).hexdigest()
                self._commit_locked(repo_id, commit, {".gitattributes": attributes.encode()}, ())
                self._messages[commit] = "initial commit"
        if exists:
            self._json(handler, 409, {"error": "You already created this model repo", "url": url})
        else:
            self._json(handler, 200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, handler: _Handler, body: bytes) -> None:
        """A model card's YAML front matter: an object, or 400 with the error (no front matter: a warning)."""
        import yaml  # a dependency of huggingface_hub

        content = json.loads(body or b"{}").get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if match is None:
            self._json(handler, 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            return
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            meta = exc
        if not isinstance(meta, dict):
            message = f"metadata is not a YAML object: {meta}"
            self._json(handler, 400, {"errors": [{"message": message}]}, {"X-Error-Message": message})
            return
        self._json(handler, 200, {"errors": [], "warnings": []})

    def _preupload(self, handler: _Handler, where: dict[str, str], request: Any) -> None:
        head = self._head_files(handler, where["repo"], where["revision"])
        if head is None:
            return
        answers = []
        for entry in request.get("files", []):
            path, size = entry["path"], int(entry["size"])
            lfs = self._is_lfs(path, size, base64.b64decode(entry.get("sample", "")))
            existing = head[1].get(path)
            if existing is None:
                oid = None
            elif lfs:
                oid = hashlib.sha256(existing).hexdigest()
            else:
                oid = hashlib.sha1(b"blob %d\0" % len(existing) + existing).hexdigest()
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json(handler, 200, {"files": answers, "commitOid": head[0]})

    def _lfs_batch(self, handler: _Handler, where: dict[str, str], request: Any) -> None:
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            self._error(handler, 400, "only the basic upload transfer is supported")
            return
        if self._head_files(handler, where["repo"], "main") is None:
            return
        objects = []
        for obj in request.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            with self._lock:
                stored = self._blobs.get(oid)
                if stored is None:
                    self._announced[oid] = size
            if stored is None:
                item["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{oid}", "header": {}},
                    "verify": {"href": f"{self.url}/{where['repo']}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(item)
        body = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        self._send(handler, "POST", 200, body, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_verify(self, handler: _Handler, where: dict[str, str], request: Any) -> None:
        with self._lock:
            data = self._blobs.get(str(request.get("oid")))
        if data is None or len(data) != request.get("size"):
            self._error(handler, 404, f"object {request.get('oid')} of size {request.get('size')} was not uploaded")
        else:
            self._json(handler, 200, {"message": "verified"})

    def _commit(self, handler: _Handler, where: dict[str, str], body: bytes) -> None:
        repo_id = where["repo"]
        head = self._head_files(handler, repo_id, where["revision"])
        if head is None:
            return
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError:
            self._error(handler, 400, "commit payload is not NDJSON")
            return
        if not lines or lines[0].get("key") != "header":
            self._error(handler, 400, "the first NDJSON line must be the commit header")
            return
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and not head[0].startswith(parent):
            self._error(handler, 412, f"parent commit {parent} is not the head of main ({head[0]})")
            return
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    self._error(handler, 400, f"unsupported encoding {value.get('encoding')!r}")
                    return
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                with self._lock:
                    data = self._blobs.get(value.get("oid", ""))
                if data is None or ("size" in value and len(data) != value["size"]):
                    self._error(handler, 422, f"LFS object {value.get('oid')} for {value.get('path')} was not uploaded")
                    return
                added[value["path"]] = data
            elif key == "deletedFile":
                if value["path"] not in head[1]:
                    self._error(handler, 404, f"cannot delete {value['path']}: no such file", "EntryNotFound")
                    return
                deleted.append(value["path"])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                deleted += [p for p in head[1] if p.startswith(prefix)]
            else:
                self._error(handler, 400, f"unknown commit operation {key!r}")
                return
        summary = str(header.get("summary", ""))
        digest = hashlib.sha1(f"{repo_id}\n{head[0]}\n{summary}".encode())
        for path in sorted(added):
            digest.update(f"\n+{path} {hashlib.sha256(added[path]).hexdigest()}".encode())
        for path in sorted(deleted):
            digest.update(f"\n-{path}".encode())
        with self._lock:
            raced = self._repos[repo_id][-1][0] != head[0]  # another commit landed meanwhile
            if not raced:
                commit = self._commit_locked(repo_id, digest.hexdigest(), added, tuple(deleted))
                self._messages[commit] = summary
        if raced:
            self._error(handler, 409, "main moved while committing; retry")
            return
        self._json(
            handler,
            200,
            {
                "success": True,
                "commitOid": commit,
                "commitUrl": f"{self.url}/{repo_id}/commit/{commit}",
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    # routing ---------------------------------------------------------------------------------------------
    def _route(self, handler: _Handler, method: str, path: str, body: bytes) -> None:
        if method in ("POST", "PUT"):
            if not self._route_upload(handler, method, path, body):
                self._error(handler, 404, f"no such endpoint: {method} {path}")
            return
        cdn = self._CDN.match(path)
        if cdn:
            with self._lock:
                data = self._blobs.get(cdn.group("sha256"))
            if data is None:
                self._send(handler, method, 404, b"no such blob\n", {})
            else:
                self._send_file(handler, method, data, {"ETag": f'"{cdn.group("sha256")}"'})
            return
        match = self._RESOLVE.match(path)
        if not match:
            self._send(
                handler,
                method,
                404,
                b"not found\n",
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return
        repo_id, revision, filename = match.group("repo", "revision", "filename")
        with self._lock:
            history = list(self._repos.get(repo_id, []))
            override = self._corrupt.get((repo_id, filename))
        if not history:
            self._send(
                handler,
                method,
                404,
                b"repository not found\n",
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return
        snapshot = history[-1] if revision == "main" else next((h for h in history if h[0] == revision), None)
        if snapshot is None:
            self._send(
                handler,
                method,
                404,
                b"revision not found\n",
                {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id: " + revision},
            )
            return
        commit, files = snapshot
        if filename not in files:
            # The real hub names the commit even for a missing entry (the client caches the absence under it).
            self._send(
                handler,
                method,
                404,
                b"entry not found\n",
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": commit},
            )
            return
        data = override if override is not None else files[filename]
        sha256 = hashlib.sha256(data).hexdigest()
        if self.lfs_redirects:
            # Like the hub's LFS files: metadata on the 302 itself, bytes from a different origin.
            location = f"http://localhost:{self.port}/cdn/{sha256}"
            self._send(
                handler,
                method,
                302,
                b"",
                {
                    "Location": location,
                    "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                },
            )
            return
        self._send_file(handler, method, data, {"X-Repo-Commit": commit, "ETag": f'"{sha256}"'})
