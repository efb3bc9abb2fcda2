"""Benchmark (not a test): relay against a bare Starlette endpoint on the same uvicorn settings, same run.

Prints throughput ratio relay/bare with 10 concurrent senders, relay's ack latency p50/p99, the same ratio once the
log holds 100k deliveries, RSS at empty and at 100k, and the time until relay listens again after a restart.
Usage: .venv/bin/python bench/run.py [--seconds 10] [--records 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay.ingest import delivery_doc
from relay.journal import dumps, render_tables
from tests.conftest import free_port, write_config
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


async def drive(url: str, seconds: float, senders: int = 10) -> tuple[float, list[float]]:
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
    return len(latencies) / elapsed, sorted(latencies)


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
        texts = {
            i: dumps({**doc, "id": i, "task_id": f"pre{i}", "duplicate": False, "task_state": "complete"}) for i in ids
        }
        (state / f"callbacks-archive-callbacks-{ids[0]:09d}-{ids[-1]:09d}.json").write_bytes(
            render_tables({"callbacks": texts})
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    state = work / "state"
    state.mkdir()
    port, admin, bare_port = free_port(), free_port(), free_port()
    config = write_config(
        work,
        {
            "server": {"port": port, "token": "bench-token-0123456789"},
            "admin": {"port": admin},
            "storage": {"state_dir": str(state)},
            "tunnel": {"provider": "none", "public_url": "https://bench.test"},
            "log": {"level": "warning"},
        },
    )
    env = {**os.environ, "NO_PROXY": "*"}
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)], stderr=subprocess.DEVNULL, env=env)

    def start_relay() -> tuple[subprocess.Popen[bytes], float]:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_listening(f"http://127.0.0.1:{admin}/healthz")
        return proc, time.perf_counter() - started

    relay, _ = start_relay()
    wait_listening(f"http://127.0.0.1:{bare_port}/")
    relay_url = f"http://127.0.0.1:{port}/callback/bench-token-0123456789"
    bare_url = f"http://127.0.0.1:{bare_port}/callback/x"
    rss_empty = rss_mb(relay.pid)
    bare_rps, _ = asyncio.run(drive(bare_url, args.seconds))
    relay_rps, lat = asyncio.run(drive(relay_url, args.seconds))
    relay.send_signal(signal.SIGTERM)
    relay.wait(60)
    # A log that grew to `records` over time: archives as rotation leaves them, in a state dir of its own.
    full = work / "full"
    full.mkdir()
    preload(full, args.records)
    write_config(
        work,
        {
            "server": {"port": port, "token": "bench-token-0123456789"},
            "admin": {"port": admin},
            "storage": {"state_dir": str(full)},
            "tunnel": {"provider": "none", "public_url": "https://bench.test"},
            "log": {"level": "warning"},
        },
    )
    relay, _ = start_relay()  # first start creates the outbox
    relay.send_signal(signal.SIGTERM)
    relay.wait(60)
    relay, restart = start_relay()
    bare_rps2, _ = asyncio.run(drive(bare_url, args.seconds))
    relay_rps2, lat2 = asyncio.run(drive(relay_url, args.seconds))
    rss_full = rss_mb(relay.pid)
    relay.send_signal(signal.SIGTERM)
    relay.wait(60)
    bare.terminate()
    bare.wait(10)
    ratio, ratio_full = relay_rps / bare_rps, relay_rps2 / bare_rps2

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(len(values) * p))] * 1000

    print(f"bare endpoint:           {bare_rps:8.0f} req/s (baseline, same run)")
    print(f"relay, empty log:        {relay_rps:8.0f} req/s  ratio {ratio:.2f}  (target >= 0.5)")
    print(f"relay ack latency:       p50 {pct(lat, 0.5):.1f} ms  p99 {pct(lat, 0.99):.1f} ms")
    print(
        f"relay, {args.records} in log: {relay_rps2:8.0f} req/s  ratio {ratio_full:.2f}  "
        f"= {ratio_full / ratio:.2f} x empty (target >= 0.9); p50 {pct(lat2, 0.5):.1f} ms p99 {pct(lat2, 0.99):.1f} ms"
    )
    print(
        f"RSS:                     {rss_empty:.0f} MB empty, {rss_full:.0f} MB at {args.records} "
        f"= {rss_full / rss_empty:.2f} x (target <= 1.5)"
    )
    print(f"restart with {args.records}: listening after {restart:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
