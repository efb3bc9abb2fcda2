"""Stress (not a test): a hostile mix against a real relay for N seconds, then what held.

The mix, all on loopback and every part bounded: senders of valid callbacks, bad and odd bodies (not JSON,
oversized, lone surrogates and terminal escapes, repeated keys), idle connections, slowloris headers, bursts of
connections past the cap, kill -9 cycles (each followed by a check that every JSON file parses), and two alert
targets, one of which never answers.

Prints: requests, 200s, records found (of the callbacks acknowledged), files that failed to parse after a kill,
alerts expected vs received at the answering target, max RSS, relay's stderr bytes (and tracebacks in it).
Usage: .venv/bin/python bench/stress.py [--seconds 300] [--http auto] [--kill-every 30] [--log-level warning]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay.store import read_all
from tests.conftest import TOKEN, CaptureServer, free_port, write_config
from tests.family import TRACK, music

IDLE = 300  # idle connections held open (and reopened as relay closes them)
SLOW = 20  # slowloris connections, one header byte a second each
FLOOD = 1500  # connections opened at once in each burst, past server.max_connections
SENDERS = 4

BAD_BODIES = [
    b"not json at all",
    b'{"code": 200, "duration": NaN}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"code": 200, "msg": "\xff\xfe"}',
    b'{"pad": "' + b"x" * 1_100_000 + b'"}',  # over max_body_bytes: 413
    b"",
]


@dataclass
class Stats:
    """What the workers saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    acked: set[str] = field(default_factory=set)
    parse_failures: list[str] = field(default_factory=list)
    kills: int = 0
    max_rss_kb: int = 0

    def answered(self, code: int, task: str | None = None) -> None:
        with self.lock:
            self.requests += 1
            self.codes[code] += 1
            if code == 200 and task is not None:
                self.acked.add(task)

    def failed(self, exc: Exception) -> None:
        with self.lock:
            self.requests += 1
            self.errors[type(exc).__name__] += 1


class Relay:
    """A relay process with its state in `dir`, its stderr kept in one file across restarts."""

    def __init__(self, directory: Path, config: Path, port: int, admin: int) -> None:
        self.dir = directory
        self.config = config
        self.port = port
        self.admin = admin
        self.stderr = directory / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.dir,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.admin}/healthz", timeout=2).status_code in (200, 503):
                    return
            if self.proc.poll() is not None:
                raise SystemExit(f"relay exited with {self.proc.returncode}; see {self.stderr}")
            time.sleep(0.1)
        raise SystemExit("relay did not start within 120 s")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(120)

    def rss_kb(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def callback(n: int, tag: str) -> tuple[str, bytes]:
    """A complete music callback whose task id and track title are unique (the title is found in its alert)."""
    task = f"{tag}-{n}"
    return task, json.dumps(music(task=task, tracks=[{**TRACK, "title": f"stress {task}"}])).encode()


def odd_callback(n: int) -> tuple[str, bytes]:
    """Valid, but hostile to every output: lone surrogates, terminal escapes, repeated keys."""
    task = f"odd-{n}"
    title = f"stress {task} \\ud800 \\u001b[2J \\u009b31m"
    body = (
        f'{{"code": 200, "msg": "ok", "msg": "\\u001b]0;pwned\\u0007", "data": {{"callbackType": "complete", '
        f'"task_id": "{task}", "data": [{{"id": "x", "title": "{title}", "audio_url": "https://example.cn/a.mp3"}}]}}}}'
    )
    return task, body.encode()


def sender(relay: Relay, stats: Stats, stop: threading.Event, tag: str) -> None:
    """Valid callbacks as fast as relay takes them; one in eight is an odd one."""
    n = 0
    with httpx.Client(timeout=15) as client:
        while not stop.is_set():
            n += 1
            task, body = odd_callback(n) if tag == "s0" and n % 8 == 0 else callback(n, tag)
            try:
                response = client.post(f"http://127.0.0.1:{relay.port}/callback/{TOKEN}", content=body)
                stats.answered(response.status_code, task)
                if response.status_code != 200:
                    time.sleep(0.05)  # a provider retries later, not in a tight loop
            except httpx.HTTPError as exc:
                stats.failed(exc)
                time.sleep(0.1)


def bad_bodies(relay: Relay, stats: Stats, stop: threading.Event) -> None:
    """Bodies relay must refuse with a reason (and record as rejected)."""
    n = 0
    with httpx.Client(timeout=15) as client:
        while not stop.is_set():
            body = BAD_BODIES[n % len(BAD_BODIES)]
            n += 1
            try:
                stats.answered(client.post(f"http://127.0.0.1:{relay.port}/callback/{TOKEN}", content=body).status_code)
            except httpx.HTTPError as exc:
                stats.failed(exc)
            time.sleep(0.05)


def _open(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def idle_connections(relay: Relay, stop: threading.Event) -> None:
    """Hold IDLE connections that send nothing, reopening those relay closes."""
    held: list[socket.socket] = []
    while not stop.is_set():
        for sock in [s for s in held if _closed(s)]:
            sock.close()
            held.remove(sock)
        while len(held) < IDLE and not stop.is_set():
            opened = _open(relay.port)
            if opened is None:
                break
            held.append(opened)
        stop.wait(0.5)
    for sock in held:
        sock.close()


def slowloris(relay: Relay, stop: threading.Event) -> None:
    """SLOW connections each sending one byte of a request head a second."""
    head = f"POST /callback/{TOKEN} HTTP/1.1\r\nHost: x\r\n" + "X-Pad: " + "y" * 200 + "\r\n"
    held: dict[socket.socket, int] = {}
    while not stop.is_set():
        while len(held) < SLOW:
            opened = _open(relay.port)
            if opened is None:
                break
            held[opened] = 0
        for sock, pos in list(held.items()):
            try:
                sock.send(head[pos % len(head)].encode())
                held[sock] = pos + 1
            except OSError:
                sock.close()
                del held[sock]
        stop.wait(1.0)
    for sock in held:
        sock.close()


def flood(relay: Relay, stats: Stats, stop: threading.Event) -> None:
    """Every 5 s, FLOOD connections at once, each sending a callback, then all closed."""
    n = 0
    while not stop.wait(5.0):
        burst = [s for s in (_open(relay.port) for _ in range(FLOOD)) if s is not None]
        for sock in burst[-50:]:  # a few of them send a callback: past the cap, a 503; under it, a 200
            n += 1
            task, body = callback(n, "flood")
            head = f"POST /callback/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            with contextlib.suppress(OSError):
                sock.sendall(head.encode() + body)
                sock.settimeout(5)
                code = re.match(rb"HTTP/1.1 (\d+)", sock.recv(64))
                if code:
                    stats.answered(int(code[1]), task)
        for sock in burst:
            sock.close()


class HangingTarget:
    """An alert target that accepts connections and never answers (it holds at most 200 of them)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.accepted += 1
                self.held.append(conn)
                if len(self.held) > 200:
                    self.held.pop(0).close()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def noisiest(stderr: bytes, top: int = 5) -> list[tuple[int, str]]:
    """The most frequent kinds of line relay wrote to stderr (numbers and timestamps folded)."""
    kinds: Counter[str] = Counter()
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = re.sub(r"^\S+ \S+ ", "", line)  # the timestamp
        kinds[re.sub(r"\d+", "N", line)[:110]] += 1
    return [(count, kind) for kind, count in kinds.most_common(top)]


def check_files(directory: Path, stats: Stats) -> None:
    """Every JSON file relay keeps must parse, whenever it was killed."""
    for path in directory.glob("*.json"):
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            stats.parse_failures.append(f"{path.name}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--http", default="auto", choices=["auto", "httptools", "h11"])
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between kill -9 cycles (0: none)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-hanging-target", action="store_true", help="only the answering alert target")
    args = parser.parse_args()

    good, hanging = CaptureServer(), HangingTarget()
    with tempfile.TemporaryDirectory(prefix="relay-stress-") as tmp:
        directory = Path(tmp)
        port, admin = free_port(), free_port()
        config = write_config(
            directory,
            {
                "server": {"port": port, "token": TOKEN, "http": args.http},
                "admin": {"port": admin},
                "storage": {"state_dir": str(directory / "state")},
                "tunnel": {"provider": "none", "public_url": "https://relay.example.test"},
                "notify": {
                    "urls": [f"json://127.0.0.1:{good.port}/ok"]
                    + ([] if args.no_hanging_target else [f"json://127.0.0.1:{hanging.port}/hangs"]),
                    "timeout": 5.0,
                    "retry_base": 1.0,
                    "retry_max": 10.0,
                    "burst_limit": 1_000_000,  # no digests: one alert per outcome, to count them
                },
                "log": {"level": args.log_level},
            },
        )
        relay = Relay(directory, config, port, admin)
        relay.start()
        stats = Stats()
        stop = threading.Event()
        workers = [
            *(threading.Thread(target=sender, args=(relay, stats, stop, f"s{i}")) for i in range(SENDERS)),
            threading.Thread(target=bad_bodies, args=(relay, stats, stop)),
            threading.Thread(target=idle_connections, args=(relay, stop)),
            threading.Thread(target=slowloris, args=(relay, stop)),
            threading.Thread(target=flood, args=(relay, stats, stop)),
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        next_kill = started + args.kill_every if args.kill_every else float("inf")
        while time.monotonic() - started < args.seconds:
            stats.max_rss_kb = max(stats.max_rss_kb, relay.rss_kb())
            if time.monotonic() >= next_kill:
                relay.signal(signal.SIGKILL)
                stats.kills += 1
                check_files(directory / "state", stats)
                relay.start()
                next_kill = time.monotonic() + args.kill_every
            time.sleep(0.2)
        stop.set()
        for worker in workers:
            worker.join()

        # Let the queue deliver what was acknowledged (the hanging target keeps failing), then stop cleanly.
        expected = set(stats.acked)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not expected <= received_titles(good):
            stats.max_rss_kb = max(stats.max_rss_kb, relay.rss_kb())
            time.sleep(1)
        try:
            pending = httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=10).json()["alerts"]
        except (httpx.HTTPError, ValueError, KeyError):
            pending = "unknown"
        exit_code = relay.signal(signal.SIGTERM)
        check_files(directory / "state", stats)
        found = {d.get("task_id") for d in read_all(directory / "state" / "callbacks.json")}
        got = received_titles(good)
        total_alerts = len(good.requests)
        stderr = relay.stderr.read_bytes()

        print(f"duration                 {args.seconds:.0f} s, stack {args.http}, {stats.kills} kill -9 cycles")
        print(f"requests                 {stats.requests} ({dict(sorted(stats.codes.items()))})")
        print(f"connection errors        {sum(stats.errors.values())} ({dict(stats.errors)})")
        print(f"200s (distinct tasks)    {stats.codes[200]} ({len(stats.acked)})")
        print(f"records found            {len(stats.acked & found)} of {len(stats.acked)} acknowledged")
        print(f"files failing to parse   {len(stats.parse_failures)} {stats.parse_failures[:3]}")
        print(f"alerts expected/received {len(expected)} / {len(got & expected)} (requests at target: {total_alerts})")
        print(f"alerts at hanging target {hanging.accepted} connections, none answered")
        print(f"max RSS                  {stats.max_rss_kb / 1024:.0f} MB")
        print(f"stderr                   {len(stderr)} bytes, {stderr.count(b'Traceback')} tracebacks")
        print(f"exit code after SIGTERM  {exit_code}")
        print(f"alert queue at the end   {pending}")
        for count, kind in noisiest(stderr):
            print(f"  stderr x{count:<6} {kind}")
    good.close()
    hanging.close()


def received_titles(target: CaptureServer) -> set[str]:
    """Task ids named in the alerts a target received."""
    tasks: set[str] = set()
    with target.lock:
        bodies = [r["body"].decode("utf-8", "replace") for r in target.requests]
    for body in bodies:
        tasks.update(re.findall(r"stress ((?:s\d|odd|flood)-\d+)", body))
    return tasks


if __name__ == "__main__":
    main()
