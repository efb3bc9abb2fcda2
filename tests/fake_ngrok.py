"""A stand-in for the ngrok agent that speaks the protocol pyngrok uses, and forwards traffic locally.

Run as `ngrok start --none --log stdout [--config P]` it logs the logfmt start-up lines pyngrok waits for,
serves the agent API (`/api/endpoints`) and, for each endpoint, a forwarding proxy on 127.0.0.1 that adds the
X-Forwarded-* headers ngrok adds. A public URL without a static domain is the proxy's own address; with one, the
proxy port is written to $FAKE_NGROK_STATE. NGROK_AUTHTOKEN=bad-token fails authentication like ngrok does, and
while the agent recorded in $FAKE_NGROK_STATE still runs, another is refused like ngrok's one-session limit.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ENDPOINTS: dict[str, dict[str, Any]] = {}


def install(path: Path) -> Path:
    """Put an executable at `path` that runs this fake agent, as pyngrok expects to find an `ngrok` there."""
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    path.chmod(0o755)
    return path


def log(level: str, msg: str, **fields: str) -> None:
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f't={time.strftime("%Y-%m-%dT%H:%M:%S")} lvl={level} msg="{msg}" {extra}'.rstrip(), flush=True)


def proxy_to(upstream: str, public_host: str) -> ThreadingHTTPServer:
    target = urllib.parse.urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers.update(
                {
                    "X-Forwarded-For": "203.0.113.7",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": public_host,
                    "Host": public_host,
                }
            )
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Api(BaseHTTPRequestHandler):
    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json(200, {"endpoints": list(ENDPOINTS.values()), "uri": "/api/endpoints"})

    def do_POST(self) -> None:
        options = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        name = options["name"]
        upstream = options["upstream"]["url"]
        wanted = options.get("url")
        proxy = proxy_to(upstream, urllib.parse.urlsplit(wanted).hostname if wanted else "")
        public_url = wanted or f"http://127.0.0.1:{proxy.server_address[1]}"
        state = os.environ.get("FAKE_NGROK_STATE")
        if state:
            with open(state, "w") as fh:
                json.dump({"public_url": public_url, "proxy_port": proxy.server_address[1], "pid": os.getpid()}, fh)
        ENDPOINTS[name] = {
            "name": name,
            "uri": f"/api/endpoints/{name}",
            "public_url": public_url,
            "upstream": {"url": upstream},
        }
        log("info", "started tunnel", name=name, url=public_url)
        self._json(201, ENDPOINTS[name])

    def do_DELETE(self) -> None:
        ENDPOINTS.pop(self.path.rsplit("/", 1)[-1], None)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def other_session_online() -> bool:
    """Whether the agent that last opened a tunnel (per $FAKE_NGROK_STATE) is still running."""
    try:
        with open(os.environ["FAKE_NGROK_STATE"]) as fh:
            pid = int(json.load(fh)["pid"])
        with open(f"/proc/{pid}/stat") as fh:
            return pid != os.getpid() and fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (KeyError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if "--version" in argv or argv[:1] == ["version"]:
        print("ngrok version 3.20.0")
        return 0
    if argv[:1] != ["start"]:
        return 0
    if "--authtoken" in argv:
        log("eror", "token on the command line", err='"relay must not pass the authtoken on the command line"')
        return 1
    if os.environ.get("NGROK_AUTHTOKEN") == "bad-token":
        log(
            "eror",
            "failed to auth",
            err='"authentication failed: The authtoken you specified is invalid. ERR_NGROK_105"',
        )
        return 1
    if other_session_online():
        log(
            "eror",
            "failed to auth",
            err='"authentication failed: Your account is limited to 1 simultaneous ngrok agent sessions. '
            'ERR_NGROK_108"',
        )
        return 1
    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    log("info", "starting web service", obj="web", addr=f"127.0.0.1:{api.server_address[1]}")
    log("info", "client session established", obj="tunnels.session")
    log("info", "tunnel session started", obj="tunnels.session")
    while True:
        time.sleep(3600)


def tunnel_settings(folder: Path) -> dict[str, Any]:
    """[tunnel] settings pointing pyngrok at a fake agent installed in `folder`, checked every 0.5 s."""
    exe = install(folder / "ngrok")
    (folder / "ngrok.yml").write_text('version: "3"\n')
    return {
        "provider": "ngrok",
        "public_url": "",
        "authtoken": "good-token-123",
        "ngrok_path": str(exe),
        "ngrok_config": str(folder / "ngrok.yml"),
        "check_interval": 0.5,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

