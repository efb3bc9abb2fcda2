"""Hostile connections: idle and slow clients, floods past the cap and the open-files limit, early senders,
stalled uploads at shutdown. Each on both HTTP stacks (server.http), on loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay import connections
from relay.connections import ConnectionLimits, Throttle, accept_error_handler, public_connection_cap
from tests.conftest import TOKEN, CaptureServer, RelayProcess, wait_for
from tests.family import music

STACKS = ["httptools", "h11"]


# -- pure parts ---------------------------------------------------------------------------------------------


def test_throttle_logs_once_per_interval_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    """A storm of the same event is one line per interval, the next one saying how many were not logged."""
    now = [0.0]
    throttle = Throttle(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="relay.connections"):
        logged = [throttle.log(logging.ERROR, "accept", "cannot accept") for _ in range(1000)]
        now[0] = 10.5
        logged.append(throttle.log(logging.ERROR, "accept", "cannot accept"))
        logged.append(throttle.log(logging.ERROR, "other", "another event"))
    assert logged.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "cannot accept",
        "cannot accept (999 more in the last 10 s)",
        "another event",
    ]


def test_accept_errors_are_rate_limited_and_other_loop_errors_pass(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio reports "socket.accept() out of system resource" per failed accept; relay logs it once."""
    handler = accept_error_handler(Throttle(interval=3600))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(500):
                handler(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "x")})
            handler(loop, {"message": "Task exception was never retrieved"})
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot accept connections" in m for m in messages) == 1
    assert any("Task exception was never retrieved" in m for m in messages)


@pytest.mark.parametrize(
    ("limit", "in_use", "wanted", "admin", "expected"),
    [
        (20000, 40, 1000, 64, 1000),
        (1024, 40, 1000, 64, 696),
        (400, 40, 1000, 64, 142),
        (250, 40, 1000, 64, 2),
        (240, 40, 1000, 64, 0),
    ],
    ids=["room-for-all", "debian-default-1024", "tight", "barely", "no-room"],
)
def test_public_cap_leaves_a_reserve_for_the_log_and_the_admin_listener(
    monkeypatch: pytest.MonkeyPatch, limit: int, in_use: int, wanted: int, admin: int, expected: int
) -> None:
    """The public listener never takes the descriptors the journal, the archives and the admin listener need."""
    monkeypatch.setattr(connections, "open_descriptors", lambda: in_use)
    monkeypatch.setattr(connections, "raise_descriptor_limit", lambda wanted: min(wanted, limit))
    cap, nofile = public_connection_cap(wanted, admin)
    assert (cap, nofile) == (expected, min(limit, in_use + 128 + admin + 8 + wanted + 125))
    if cap:
        reserve = in_use + connections.RESERVED_FDS + admin + connections.refusal_room(admin)
        assert reserve + cap + connections.refusal_room(cap) <= nofile


def test_refusals_are_bounded() -> None:
    """A listener lingers over at most an eighth of its cap (8 at least) of refused connections."""
    assert ConnectionLimits("public", 1000, 10.0).max_refusing == 125
    assert ConnectionLimits("admin", 16, 10.0).max_refusing == 8


# -- helpers -------------------------------------------------------------------------------------------------


def callback_request(body: bytes = b'{"code": 200, "msg": "ok"}') -> bytes:
    """A complete POST of a callback, as bytes on the wire."""
    return (
        f"POST /callback/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_reply(sock: socket.socket, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes (or a reset: what a cleanly refused connection gets)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b"" or closed_by_server(sock)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def connect(relay: RelayProcess) -> socket.socket:
    """A fresh connection to the public listener."""
    return socket.create_connection(("127.0.0.1", relay.port), timeout=30)


# -- finding 1: timeouts, the cap, the reserve ---------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_idle_slow_and_excess_connections_do_not_stop_callbacks(make_relay: Any, stack: str) -> None:
    """Connections past the cap get 503; idle and slowloris connections are closed after header_timeout; the
    admin listener answers throughout; a callback on a fresh connection afterwards is recorded."""
    relay = make_relay(server={"http": stack, "max_connections": 8, "header_timeout": 1, "body_timeout": 60})
    # The cap, held by uploads in progress (busy connections have no header timeout: body_timeout is theirs).
    stalled = [connect(relay) for _ in range(8)]
    for sock in stalled:
        sock.sendall(callback_request(b'{"code": 200, "padding": "' + b"x" * 100)[:-50])
    for _ in range(4):
        extra = connect(relay)
        extra.sendall(callback_request())
        reply = read_reply(extra)
        assert reply.startswith(b"HTTP/1.1 503 ") or reply == b"", reply
        extra.close()
    assert httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 200
    for sock in stalled:
        sock.close()

    # Idle connections and a slowloris (one byte of head every 0.2 s) are cut off after header_timeout.
    idle = [connect(relay) for _ in range(5)]
    slow = connect(relay)
    stop = threading.Event()

    def slowloris() -> None:
        for byte in callback_request():
            if stop.is_set():
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    started = time.monotonic()
    dribbler = threading.Thread(target=slowloris, daemon=True)
    dribbler.start()
    wait_for(lambda: all(closed_by_server(sock) for sock in idle), timeout=30)
    wait_for(lambda: not dribbler.is_alive(), timeout=30)
    stop.set()
    assert time.monotonic() - started < 25  # the whole head would take about 30 s to send
    for sock in [*idle, slow]:
        sock.close()
    assert relay.post(music(task="after-the-flood")).status_code == 200
    wait_for(lambda: "after-the-flood" in {d["task_id"] for d in relay.deliveries()})
    assert "Traceback" not in relay.read_output()


@pytest.mark.parametrize("stack", STACKS)
def test_a_flood_past_the_open_files_limit_leaves_the_log_and_admin_working(make_relay: Any, stack: str) -> None:
    """Under a low open-files limit relay lowers its public cap; a flood of connections then gets 503 or a
    clean refusal, /healthz stays 200, no "Too many open files" and no accept-error storm, and callbacks
    are recorded once the idle connections have timed out."""
    relay = make_relay(start=False, server={"http": stack, "header_timeout": 2})
    relay.command_prefix = ["prlimit", "--nofile=400:400"]
    relay.start()
    match = re.search(r"server.max_connections lowered from 1000 to (\d+)", relay.read_output())
    assert match, relay.read_output()
    cap = int(match[1])
    assert 0 < cap < 400
    flood = []
    for _ in range(cap + 150):
        try:
            flood.append(connect(relay))
        except OSError:
            break  # refused before connecting: also clean
    assert httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 200
    late = connect(relay)
    late.sendall(callback_request())
    reply = read_reply(late)
    late.close()
    assert reply.startswith(b"HTTP/1.1 503 ") or reply == b"", reply

    def recorded() -> bool:
        try:
            return relay.post(music(task="after-flood")).status_code == 200
        except httpx.HTTPError:  # a connection past the cap may be dropped rather than answered
            return False

    wait_for(recorded, timeout=60)
    for sock in flood:
        sock.close()
    out = relay.read_output()
    assert "Too many open files" not in out
    assert "out of system resource" not in out
    assert relay.stop() == 0


# -- finding 10: ready before ready --------------------------------------------------------------------------


def write_big_log(path: Path, count: int) -> None:
    """A live log of `count` deliveries, written directly (relay takes a few seconds to open it)."""
    template = json.dumps({**music(task="TASK"), "id": 0})
    docs = ",".join(f'"{i}":{template.replace("TASK", f"big-{i}")}' for i in range(1, count + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{"callbacks":{{{docs}}},"rejected":{{}}}}')


@pytest.mark.parametrize("stack", STACKS)
def test_no_200_before_ready_and_no_errors_while_starting(make_relay: Any, tmp_path: Path, stack: str) -> None:
    """While relay opens a large log, senders get a clear 503 (never a wait, an error or a 500); the first 200
    comes after systemd's READY=1."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    relay = make_relay(start=False, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}, server={"http": stack})
    write_big_log(relay.log_path, 40_000)
    relay.start(wait=False)
    messages: list[str] = []

    def ready() -> bool:
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(4096, socket.MSG_DONTWAIT).decode())
        return any("READY=1" in m for m in messages)

    statuses: list[tuple[int, bool]] = []

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", relay.port), timeout=30).close()
        except ConnectionRefusedError:  # before relay's process has bound its port
            return False
        return True

    wait_for(listening, timeout=60, interval=0.01)
    while not statuses or statuses[-1][0] != 200:
        assert relay.proc is not None
        assert relay.proc.poll() is None, relay.read_output()
        response = relay.post(music(task=f"early-{len(statuses)}"))  # a connection error fails the test
        statuses.append((response.status_code, ready()))
        if response.status_code == 503:
            assert "starting" in response.json()["error"]
            assert response.headers["retry-after"]
    assert statuses[0] == (503, False), statuses  # answered while starting, not held until ready
    assert {code for code, _ in statuses} <= {200, 503}
    assert all(was_ready for code, was_ready in statuses if code == 200)
    notify.close()


# -- finding 11: stalled upload at shutdown, second signal ---------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_a_stalled_upload_gets_408_at_shutdown(make_relay: Any, stack: str) -> None:
    """Ctrl-C while a sender stalls mid-body: 408 at once (not a 500 after 20 s), recorded as rejected, and
    relay exits 0 without a traceback."""
    relay = make_relay(server={"http": stack, "body_timeout": 120})
    stalled = connect(relay)
    stalled.sendall(callback_request(b'{"code": 200, "msg": "never finished", "pad": "' + b"x" * 500)[:-200])
    assert relay.post(music(task="meanwhile")).status_code == 200
    started = time.monotonic()
    assert relay.stop(signal.SIGINT) == 0
    reply = read_reply(stalled)
    stalled.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert time.monotonic() - started < 15  # uvicorn's graceful shutdown would cancel it into a 500 at 20 s
    out = relay.read_output()
    assert "Traceback" not in out
    assert "CancelledError" not in out
    rejected = [json.loads(line) for line in relay.cli("log", "--rejected", "--json", check=True).stdout.splitlines()]
    assert [r["status"] for r in rejected] == [408]
    assert "stopping" in rejected[0]["reason"]


def test_a_second_sigint_forces_the_exit(make_relay: Any, capture: CaptureServer) -> None:
    """A drain held up (here by an alert target that hangs) ends at a second Ctrl-C, with one line saying so."""
    relay = make_relay(notify={"urls": [f"json://127.0.0.1:{capture.port}/hook"], "timeout": 60})
    capture.hang.set()
    assert relay.post(music(task="hangs")).status_code == 200
    wait_for(lambda: capture.held >= 1)
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "shutting down" in relay.read_output())
    assert relay.stop(signal.SIGINT, timeout=30) == 128 + signal.SIGINT
    assert "second SIGINT: exiting now" in relay.read_output()
    capture.hang.clear()
