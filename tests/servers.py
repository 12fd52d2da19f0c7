"""Real HTTP servers on 127.0.0.1 for the network tests: a hub look-alike and a plain file server.

Both run a ``ThreadingHTTPServer`` on port 0 in a daemon thread, log every request, and have failure
switches (an HTTP status for the next requests, a truncated body, different bytes than expected).

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

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "FileServer"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: _BaseServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-body (the truncation tests do it on purpose) are not errors here.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
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

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _BaseServer:
    """Start/stop, request log and failure switches shared by both servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.request_headers: list[dict[str, str]] = []  # headers of each logged request, names lower-cased
        self._failures: list[tuple[int, str | None]] = []  # (status, method or None) consumed one per request
        self._truncations: list[int] = []  # body bytes to send before closing, one per body response
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

    def reset(self) -> None:
        """Clear every failure switch, corruption and the request log."""
        with self._lock:
            self._failures.clear()
            self._truncations.clear()
            self._reset_extra()
            self.requests.clear()
            self.request_headers.clear()

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    def _reset_extra(self) -> None:
        pass

    # request handling ------------------------------------------------------------------------------------
    def _dispatch(self, handler: _Handler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            self.requests.append((method, path))
            self.request_headers.append({k.lower(): v for k, v in handler.headers.items()})
            failure = next((i for i, (_, m) in enumerate(self._failures) if m in (None, method)), None)
            status = self._failures.pop(failure)[0] if failure is not None else None
        if status is not None:
            self._send(handler, method, status, f"injected failure {status}\n".encode(), {})
            return
        self._route(handler, method, path)

    def _route(self, handler: _Handler, method: str, path: str) -> None:
        raise NotImplementedError

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
        if method == "GET":
            with self._lock:
                cut = self._truncations.pop(0) if self._truncations else None
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

    def _route(self, handler: _Handler, method: str, path: str) -> None:
        with self._lock:
            data = self._corrupt.get(path, self._files.get(path))
        if data is None:
            self._send(handler, method, 404, b"not found\n", {"Content-Type": "text/plain"})
            return
        self._send_file(handler, method, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'})


class HubServer(_BaseServer):
    """Enough of the hub's file-resolution protocol for ``hf_hub_download`` (see the module docstring)."""

    _RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")
    _CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")

    def __init__(self, *, lfs_redirects: bool = False) -> None:
        super().__init__()
        self.lfs_redirects = lfs_redirects
        # repo_id -> [(commit, {filename: bytes})], oldest first; "main" is the last commit.
        self._repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self._corrupt: dict[tuple[str, str], bytes] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> bytes, for the CDN route

    def add_file(self, repo_id: str, filename: str, data: bytes) -> str:
        """Commit ``data`` as ``filename`` in ``repo_id``; returns the new commit's 40-hex id (deterministic)."""
        with self._lock:
            history = self._repos.setdefault(repo_id, [])
            parent, files = history[-1] if history else ("", {})
            files = {**files, filename: bytes(data)}
            commit = hashlib.sha1(
                f"{repo_id}\n{parent}\n{filename}\n{hashlib.sha256(data).hexdigest()}".encode()
            ).hexdigest()
            history.append((commit, files))
            self._blobs[hashlib.sha256(data).hexdigest()] = bytes(data)
            return commit

    def corrupt(self, repo_id: str, filename: str, data: bytes) -> None:
        """Serve ``data`` for ``filename`` at every revision (until :meth:`reset`)."""
        with self._lock:
            self._corrupt[(repo_id, filename)] = bytes(data)
            self._blobs[hashlib.sha256(data).hexdigest()] = bytes(data)

    def _reset_extra(self) -> None:
        self._corrupt.clear()

    def _route(self, handler: _Handler, method: str, path: str) -> None:
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
