"""Benchmark (not a test): relay against a bare Starlette endpoint on the same uvicorn settings, same run.

Prints throughput ratio relay/bare with 10 concurrent senders, relay's ack latency p50/p99, the same ratio once the
log holds 100k deliveries, RSS at empty and at 100k, the time until relay listens again after a restart, and the
latency from a callback to its alert reaching a local json:// target.
Usage: .venv/bin/python bench/run.py [--seconds 10] [--rounds 3] [--records 100000] [--load auto|wrk|python]
wrk comes from Debian (`apt-get install wrk`); without it the load generator is httpx in Python, which shares
the machine's cores with both servers and so narrows the gap between them.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay.ingest import delivery_doc
from relay.jsonfiles import dumps, fragment, render_fragments
from tests.conftest import CaptureServer, free_port, write_config
from tests.family import music

BARE = """
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def callback(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"status": "received"})

app = Starlette(routes=[Route("/callback/{token}", callback, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_config=None, access_log=True,
            proxy_headers=False, server_header=False, timeout_keep_alive=20)
"""


WRK_SCRIPT = """
local f = io.open(os.getenv("RELAY_BENCH_BODY"), "rb"); local body = f:read("*a"); f:close()
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local b = body:gsub("2fac00009f72", "w" .. n .. "-" .. math.random(1000000000))
  return wrk.format(nil, nil, nil, b)
end
"""


@dataclass(frozen=True)
class Run:
    """One load run: requests per second and sorted latencies (or wrk's own percentiles), in seconds."""

    rps: float
    p50: float
    p99: float


def median(runs: list[Run]) -> Run:
    """The run with the median throughput."""
    return sorted(runs, key=lambda run: run.rps)[len(runs) // 2]


def drive(url: str, seconds: float, load: str, work: Path, senders: int = 10) -> Run:
    """Drive `url` with `senders` concurrent keep-alive connections for `seconds`."""
    if load == "wrk":
        return _drive_wrk(url, seconds, work, senders)
    return asyncio.run(_drive_python(url, seconds, senders))


def _drive_wrk(url: str, seconds: float, work: Path, senders: int) -> Run:
    body, script = work / "body.json", work / "post.lua"
    body.write_text(json.dumps(music()))
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{senders}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RELAY_BENCH_BODY": str(body)},
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"{url} answered with errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]

    return Run(rps, percentile("50"), percentile("99"))


async def _drive_python(url: str, seconds: float, senders: int) -> Run:
    body = json.dumps(music()).encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30) as client:

        async def sender(n: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post(url, content=body.replace(b"2fac00009f72", f"b{n}-{i}".encode()))
                assert response.status_code == 200, response.text
                latencies.append(time.perf_counter() - started)
                i += 1

        started = time.perf_counter()
        await asyncio.gather(*(sender(n) for n in range(senders)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Run(len(latencies) / elapsed, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)])


def wait_listening(url: str, timeout: float = 60) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            httpx.get(url, timeout=1)
            return time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.01)
    raise SystemExit(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def preload(state: Path, records: int, per_file: int = 1000) -> None:
    """Write `records` deliveries as archive files, as rotation would have left them."""
    doc = delivery_doc(music(), "2026-11-01T00:00:00.000Z", 600, "bench")
    for first in range(1, records + 1, per_file):
        ids = range(first, min(first + per_file, records + 1))
        frags = {
            i: fragment(i, dumps({**doc, "id": i, "task_id": f"pre{i}", "duplicate": False, "task_state": "complete"}))
            for i in ids
        }
        (state / f"callbacks-archive-callbacks-{ids[0]:09d}-{ids[-1]:09d}.json").write_bytes(
            render_fragments({"callbacks": frags})
        )


def _end_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)


def relay_config(folder: Path, state: Path, port: int, admin: int, notify: dict[str, Any] | None = None) -> Path:
    """relay.toml in `folder` for a benchmark instance: no tunnel, quiet logs, its own state directory."""
    return write_config(
        folder,
        {
            "server": {"port": port, "token": "bench-token-0123456789"},
            "admin": {"port": admin},
            "storage": {"state_dir": str(state)},
            "tunnel": {"provider": "none", "public_url": "https://bench.test"},
            "notify": notify or {},
            "archive": {"enabled": False},  # the bodies link to internet hosts; the benchmark stays on loopback
            "log": {"level": "warning"},
        },
    )


def alert_latency(work: Path, env: dict[str, str], count: int) -> list[float]:
    """Seconds from posting a `complete` callback to its alert arriving at a json:// capture server, one at a time."""
    capture = CaptureServer()
    port, admin = free_port(), free_port()
    state = work / "alerts"
    state.mkdir()
    # The family's cover links name hosts off this machine: no cover fetch (and none in the figure).
    notify = {"urls": [f"json://127.0.0.1:{capture.port}/"], "burst_limit": count + 1, "attach_covers": False}
    config = relay_config(state, state, port, admin, notify)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    latencies = []
    try:
        wait_listening(f"http://127.0.0.1:{admin}/healthz")
        with httpx.Client(timeout=30) as client:
            for i in range(count):
                started = time.perf_counter()
                response = client.post(
                    f"http://127.0.0.1:{port}/callback/bench-token-0123456789", json=music(task=f"al{i}")
                )
                assert response.status_code == 200, response.text
                while len(capture.requests) <= i:
                    if time.perf_counter() - started > 30:
                        raise SystemExit(f"alert {i} did not arrive within 30 s")
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        capture.close()
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=200, help="callbacks for the alert latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/relay runs; medians are reported")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk (Debian's, in C) or an httpx one in Python; auto takes wrk when installed",
    )
    args = parser.parse_args()
    load = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "python")
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    port, admin, bare_port = free_port(), free_port(), free_port()
    env = {**os.environ, "NO_PROXY": "*"}
    # A run cut short (a server answering errors, Ctrl-C) must not leave servers behind on these ports.
    running: list[subprocess.Popen[bytes]] = []
    atexit.register(_end_all, running)

    def start_relay(state: Path) -> tuple[subprocess.Popen[bytes], float]:
        config = relay_config(work, state, port, admin)
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        running.append(proc)
        wait_listening(f"http://127.0.0.1:{admin}/healthz")
        return proc, time.perf_counter() - started

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    bare = subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], stderr=subprocess.DEVNULL, env=env)
    running.append(bare)
    wait_listening(f"http://127.0.0.1:{bare_port}/")
    relay_url = f"http://127.0.0.1:{port}/callback/bench-token-0123456789"
    bare_url = f"http://127.0.0.1:{bare_port}/callback/x"

    # An empty log.
    empty = work / "empty"
    empty.mkdir()

    def compare() -> tuple[Run, Run]:
        # Alternating runs, medians: the machine's speed drifts between runs, and both sides should see it.
        bare_runs, relay_runs = [], []
        for _ in range(args.rounds):
            bare_runs.append(drive(bare_url, args.seconds, load, work))
            relay_runs.append(drive(relay_url, args.seconds, load, work))
        return median(bare_runs), median(relay_runs)

    relay, _ = start_relay(empty)
    bare_run, relay_run = compare()
    rss_empty = rss_mb(relay.pid)  # after the same traffic as at 100k, so both hold a full live file
    stop(relay)

    # A log that grew to `records` over time: archives as rotation leaves them, in a state dir of its own.
    full = work / "full"
    full.mkdir()
    preload(full, args.records)
    relay, _ = start_relay(full)  # the first start creates the outbox
    stop(relay)
    relay, restart = start_relay(full)
    bare_run2, relay_run2 = compare()
    rss_full = rss_mb(relay.pid)
    stop(relay)
    bare.terminate()
    bare.wait(10)
    alerts = alert_latency(work, env, args.alerts)

    ratio, ratio_full = relay_run.rps / bare_run.rps, relay_run2.rps / bare_run2.rps
    ms = 1000
    print(
        f"load generator: {load}, 10 concurrent keep-alive senders; medians of {args.rounds} alternating "
        f"{args.seconds:g} s runs"
    )
    print(
        f"bare endpoint:           {bare_run.rps:8.0f} req/s (baseline, same run); "
        f"p50 {bare_run.p50 * ms:.1f} ms p99 {bare_run.p99 * ms:.1f} ms"
    )
    print(f"relay, empty log:        {relay_run.rps:8.0f} req/s  ratio {ratio:.2f}  (target >= 0.5)")
    print(f"relay ack latency:       p50 {relay_run.p50 * ms:.1f} ms  p99 {relay_run.p99 * ms:.1f} ms")
    print(
        f"relay, {args.records} in log: {relay_run2.rps:8.0f} req/s  ratio {ratio_full:.2f} (bare {bare_run2.rps:.0f})"
        f"  = {ratio_full / ratio:.2f} x empty (target >= 0.9); "
        f"p50 {relay_run2.p50 * ms:.1f} ms p99 {relay_run2.p99 * ms:.1f} ms"
    )
    print(
        f"RSS after the run:       {rss_empty:.0f} MB empty, {rss_full:.0f} MB at {args.records} "
        f"= {rss_full / rss_empty:.2f} x (target <= 1.5)"
    )
    print(f"restart with {args.records}: listening after {restart:.2f} s (target < 5 s)")
    p50, p99 = alerts[len(alerts) // 2], alerts[int(len(alerts) * 0.99)]
    print(
        f"alert latency:           p50 {p50 * ms:.1f} ms  p99 {p99 * ms:.1f} ms  "
        f"({len(alerts)} complete callbacks, one at a time, to a json:// capture server)"
    )


if __name__ == "__main__":
    main()
