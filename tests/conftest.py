"""Shared fixtures: a real relay process on loopback ports, and capture servers for alerts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_provider import FakeProvider, Running

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; generous limits, since tests must not depend on timing."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def toml_value(value: Any) -> str:
    """A Python value as TOML."""
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@dataclass
class RelayProcess:
    """A `relay serve` subprocess and the places it can be reached."""

    dir: Path
    config_path: Path
    port: int
    admin_port: int
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    #: Run relay through this, e.g. ["prlimit", "--nofile=400:400"] (it must exec relay in its own process).
    command_prefix: list[str] = field(default_factory=list)

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback/{TOKEN}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "state" / "callbacks.json"

    def start(self, wait: bool = True) -> RelayProcess:
        with (self.dir / "relay.out").open("a") as log_file:
            self.proc = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "relay", "serve", "--config", str(self.config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.env,
                cwd=self.dir,
            )
        if wait:
            wait_for(self._healthy_or_dead)
            assert self.proc.poll() is None, self.read_output()
        return self

    def _healthy_or_dead(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{self.admin}/healthz", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def read_output(self) -> str:
        path = self.dir / "relay.out"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.callback_url, content=content, timeout=30, **kwargs)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "relay", *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def recorded(self, table: str = "callbacks") -> list[dict[str, Any]]:
        """Every document of `table` as `relay log` reads it: durable at acknowledgement, journal included."""
        from relay.query import Filters
        from relay.reads import read_log

        return read_log(self.log_path, Filters(), table)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery in the TinyDB file itself (written at most a second after the acknowledgement)."""
        from tinydb import TinyDB

        with TinyDB(self.log_path, access_mode="r") as db:
            return [dict(d) for d in db.table("callbacks").all()]


def write_config(directory: Path, sections: dict[str, Any]) -> Path:
    """A relay.toml from nested dicts; a list of dicts is an array of tables (`[[forward]]`)."""
    lines = []
    for section, values in sections.items():
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
            lines.append("")
    path = directory / "relay.toml"
    path.write_text("\n".join(lines))
    return path


def build_relay(
    directory: Path, start: bool = True, env: dict[str, str] | None = None, **overrides: Any
) -> RelayProcess:
    """A relay in `directory` on fresh loopback ports, with config overrides: build_relay(d, notify={...})."""
    port, admin_port = free_port(), free_port()
    sections: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "token": TOKEN},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "storage": {
            "state_dir": str(directory / "state"),
            "path": str(directory / "state" / "callbacks.json"),
        },
        "tunnel": {"provider": "none", "public_url": "https://relay.example.test"},
        # attach_covers off: the family's cover links name hosts off this machine (tests reach only loopback).
        "notify": {"retry_base": 0.2, "retry_max": 1.0, "timeout": 5.0, "attach_covers": False},
        # Off unless a test turns it on (pointing it at a loopback asset server): fixture payloads link to
        # hosts on the internet (https://example.cn/...), and tests never send traffic beyond loopback.
        "archive": {"enabled": False},
        # Never the real provider: a test that forgets to point relay at the fake reaches a closed port.
        "provider": {"base_url": "http://127.0.0.1:9"},
    }
    for section, values in overrides.items():
        if isinstance(values, list):
            sections[section] = values
        else:
            sections.setdefault(section, {}).update(values)
    config = write_config(directory, sections)
    secrets = ("RELAY_TOKEN", "NGROK_AUTHTOKEN", "RELAY_PROVIDER_KEY")
    process_env = {k: v for k, v in os.environ.items() if k not in secrets}
    process_env.update({"NO_PROXY": "*", "HOME": str(directory), **(env or {})})
    relay = RelayProcess(directory, config, port, admin_port, process_env)
    return relay.start() if start else relay


def end_relay(relay: RelayProcess) -> None:
    """Stop a relay a test started, if it still runs."""
    if relay.proc is not None and relay.proc.poll() is None:
        # SIGTERM first, so relay stops its ngrok agent; SIGKILL would leave the agent running.
        relay.proc.terminate()
        try:
            relay.proc.wait(30)
        except subprocess.TimeoutExpired:
            relay.proc.kill()
            relay.proc.wait(10)


@pytest.fixture
def make_relay(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """Build (and finally stop) relay processes with config overrides: make_relay(notify={...})."""
    made: list[RelayProcess] = []

    def factory(start: bool = True, env: dict[str, str] | None = None, **overrides: Any) -> RelayProcess:
        relay = build_relay(tmp_path, start=False, env=env, **overrides)
        made.append(relay)
        return relay.start() if start else relay

    yield factory
    for relay in made:
        end_relay(relay)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """The fake provider API on a loopback port (see tests/fake_provider.py)."""
    with Running(FakeProvider()) as fake:
        yield fake


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay with default settings for every test of a module that tells its deliveries apart from others'."""
    relay = build_relay(tmp_path_factory.mktemp("shared"))
    yield relay
    end_relay(relay)


# -- capture servers ------------------------------------------------------------------------------------------


class CaptureServer:
    """An HTTP server on 127.0.0.1 that records what Apprise's json:// and form:// send it.

    `fail_next` answers that many requests with 500; `hang` holds requests until cleared.
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.hang = threading.Event()
        self.held = 0  # requests that arrived while `hang` was set
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if capture.hang.is_set():
                    with capture.lock:
                        capture.held += 1
                    while capture.hang.is_set():
                        time.sleep(0.05)
                with capture.lock:
                    if capture.fail_next > 0:
                        capture.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    capture.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json_bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.hang.clear()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A fresh capture server."""
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """An aiosmtpd server on 127.0.0.1 collecting messages in `.messages`."""
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self) -> None:
            self.messages: list[bytes] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages.append(envelope.content)
            return "250 OK"

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()
