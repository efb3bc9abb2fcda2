"""Cover art and audio on 127.0.0.1 for the page tests, so Chromium never fetches anything beyond loopback."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 120">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">
<stop offset="0" stop-color="#{a}"/><stop offset="1" stop-color="#{b}"/></linearGradient></defs>
<rect width="120" height="120" fill="url(#g)"/>
<circle cx="60" cy="60" r="30" fill="none" stroke="#ffffff" stroke-opacity=".55" stroke-width="6"/>
<circle cx="60" cy="60" r="6" fill="#ffffff" fill-opacity=".8"/></svg>"""


def cover_svg(name: str) -> bytes:
    """A record-like gradient cover whose colours come from `name`."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return _SVG.format(a=digest[:6], b=digest[6:12]).encode()


class CoverServer:
    """Serves `/cover/<name>.svg` and any `*.mp3` (a few silent bytes) on 127.0.0.1; records the paths asked for."""

    def __init__(self) -> None:
        self.requested: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requested.append(self.path)
                if self.path.startswith("/cover/"):
                    body, kind = cover_svg(self.path), "image/svg+xml"
                elif self.path.endswith(".mp3"):
                    body, kind = b"\xff\xfb\x90\x00" * 64, "audio/mpeg"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the browser drops requests it no longer needs (a page left): not worth a traceback

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
