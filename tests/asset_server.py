"""A loopback file server for download tests: generated bodies of any size, trickles, Range or not, redirects.

Paths (query parameters optional):
- `/bytes/N?seed=S&range=0|1&type=audio/mpeg&etag=0|1`: N bytes generated on the fly (see `body`), with or
  without Range support;
- `/trickle/N?chunk=C&delay=D&length=0|1&cut=M`: N bytes sent C at a time with D seconds between chunks
  (`length=0`: without Content-Length, ending with the connection; `cut=M`: hang up after byte M unless the request
  asks for a range starting at or after it);
- `/redirect/K?to=URL`: K redirects, then `to` (or `/bytes/1000`);
- `/flaky/N?fails=F`: 404 for the first F requests of that path, then N bytes;
- `/html`: a 200 with text/html (a CDN error page, not a song);
- `/file/NAME`: a body registered with `serve_file(NAME, bytes, content_type)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BLOCK = 1 << 20


def _block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)  # noqa: S311 - test data, not secrets


def body(size: int, seed: int = 0) -> bytes:
    """The bytes `/bytes/size?seed=seed` serves (for checking what landed)."""
    block = _block(seed)
    return (block * (size // BLOCK + 1))[:size]


def sha256_of(size: int, seed: int = 0) -> str:
    """sha256 of `body(size, seed)`, without holding it all in memory."""
    block = _block(seed)
    digest = hashlib.sha256()
    for _ in range(size // BLOCK):
        digest.update(block)
    digest.update(block[: size % BLOCK])
    return digest.hexdigest()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-body (a killed relay, a stopped download) are what tests do


class AssetServer:
    """A threaded HTTP server on a loopback address; counts requests per path."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self.stop_trickle = threading.Event()
        self._blocks: dict[int, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with server.lock:
                    server.hits[parts.path] += 1
                    server.requests.append({"path": self.path, "headers": dict(self.headers)})
                    count = server.hits[parts.path]
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._route(self, parts.path, query, count)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        return f"http://{self.host}:{self.port}{path}"

    def serve_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve fixed bytes at `/file/NAME`; returns the URL."""
        self.files[name] = (data, content_type)
        return self.url(f"/file/{name}")

    def block(self, seed: int) -> bytes:
        if seed not in self._blocks:
            self._blocks[seed] = _block(seed)
        return self._blocks[seed]

    def _route(self, h: BaseHTTPRequestHandler, path: str, q: dict[str, str], count: int) -> None:
        kind, _, arg = path.strip("/").partition("/")
        if kind == "bytes":
            self._send_generated(h, int(arg), q)
        elif kind == "trickle":
            self._trickle(h, int(arg), int(q.get("chunk", "65536")), float(q.get("delay", "0.05")), q)
        elif kind == "redirect":
            hops = int(arg)
            target = f"/redirect/{hops - 1}?to={q['to']}" if hops > 1 and "to" in q else q.get("to", "/bytes/1000")
            if hops > 1 and "to" not in q:
                target = f"/redirect/{hops - 1}"
            h.send_response(int(q.get("status", "302")))
            h.send_header("Location", target)
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif kind == "flaky" and count <= int(q.get("fails", "1")):
            self._plain(h, 404, b"not yet")
        elif kind == "flaky":
            self._send_generated(h, int(arg), q)
        elif kind == "html":
            self._plain(h, 200, b"<html><body>Access denied</body></html>", "text/html; charset=utf-8")
        elif kind == "file" and arg in self.files:
            data, ctype = self.files[arg]
            self._plain(h, 200, data, ctype)
        else:
            self._plain(h, 404, b"no such thing")

    def _plain(self, h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str = "text/plain") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _send_generated(self, h: BaseHTTPRequestHandler, size: int, q: dict[str, str]) -> None:
        seed = int(q.get("seed", "0"))
        ranges = q.get("range", "1") == "1"
        start = 0
        wanted = h.headers.get("Range", "")
        etag = f'"{seed}-{size}"'
        if_range = h.headers.get("If-Range")
        if ranges and wanted.startswith("bytes=") and (if_range is None or if_range == etag):
            start = int(wanted[6:].split("-")[0] or 0)
            if start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            h.send_response(200)
        h.send_header("Content-Type", q.get("type", "audio/mpeg"))
        h.send_header("Content-Length", str(size - start))
        if ranges:
            h.send_header("Accept-Ranges", "bytes")
            h.send_header("ETag", etag)
        h.end_headers()
        self._write_range(h, seed, start, size, None, 0.0)

    def _trickle(self, h: BaseHTTPRequestHandler, size: int, chunk: int, delay: float, q: dict[str, str]) -> None:
        self._send_generated_slowly(h, size, chunk, delay, q)

    def _send_generated_slowly(
        self, h: BaseHTTPRequestHandler, size: int, chunk: int, delay: float, q: dict[str, str]
    ) -> None:
        seed = int(q.get("seed", "0"))
        start = 0
        wanted = h.headers.get("Range", "")
        if wanted.startswith("bytes=") and q.get("range", "1") == "1":
            start = int(wanted[6:].split("-")[0] or 0)
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            h.send_response(200)
        h.send_header("Content-Type", "audio/mpeg")
        if q.get("length") == "0":  # the body ends when the connection closes
            h.send_header("Connection", "close")
            h.close_connection = True
        else:
            h.send_header("Content-Length", str(size - start))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{seed}-{size}"')
        h.end_headers()
        cut = int(q.get("cut", "0"))
        if cut and start < cut:  # hang up mid-body, once per path
            self._write_range(h, seed, start, cut, chunk, delay)
            h.close_connection = True
            return
        self._write_range(h, seed, start, size, chunk, delay)

    def _write_range(
        self, h: BaseHTTPRequestHandler, seed: int, start: int, end: int, chunk: int | None, delay: float
    ) -> None:
        block = memoryview(self.block(seed))
        pos = start
        step = chunk or BLOCK
        while pos < end:
            offset = pos % BLOCK
            n = min(step, BLOCK - offset, end - pos)
            h.wfile.write(block[offset : offset + n])
            pos += n
            if delay and self.stop_trickle.wait(delay):
                return
        h.wfile.flush()

    def close(self) -> None:
        """Stop serving."""
        self.stop_trickle.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition: Any, timeout: float = 30.0) -> Any:
    """Poll `condition` until truthy (tests must not depend on timing)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return value
