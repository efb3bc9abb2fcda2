"""Benchmark (not a test): relay against baselines measured in the same run, and every figure of issue #9's targets.

Baselines, each driven like relay with 10 concurrent keep-alive senders, in alternating runs (medians reported):
- bare Starlette that parses the JSON and answers, on uvicorn with uvloop and httptools (the fastest stack), and on
  h11 and asyncio (skipped with a note when uvloop or httptools is not installed);
- adnanh/webhook (Debian package `webhook`) running a shell command that appends each payload to a file and
  answering once it has (skipped with a note when the `webhook` binary is absent).
Figures: relay's throughput against them and its ack latency; the same ratio once the log holds `--records`
deliveries (written as archive files directly, as rotation leaves them) against the ratio on an empty log;
`/tasks/X` and `/api/tasks/X` latency at that size; relay's ack p99 while admin reads run continuously; the time
until relay is ready again after a restart; RSS at that size against empty; and callback-to-alert latency.
Usage: .venv/bin/python bench/run.py [--quick] [--seconds 10] [--rounds 3] [--records 1000000] [--load auto|wrk|python]
wrk comes from Debian (`apt-get install wrk`); without it the load generator is httpx in Python, which shares
the machine's cores with the servers and so narrows the gaps between them.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay.ingest import delivery_doc
from relay.jsonfiles import dumps, render_fragments
from relay.log_index import unindexed
from relay.store import archives
from tests.conftest import CaptureServer, free_port, write_config
from tests.family import music

BARE = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def callback(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse({"status": "received"})

app = Starlette(routes=[Route("/callback/{token}", callback, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop=sys.argv[2], http=sys.argv[3], log_config=None,
            access_log=True, proxy_headers=False, server_header=False, timeout_keep_alive=20)
"""

# Admin reads in a loop from `concurrency` threads until `seconds` have passed; prints counts and latencies.
READERS = """
import http.client, json, random, sys, threading, time
port, tasks, seconds, concurrency = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
statuses, latencies, lock = {}, [], threading.Lock()
deadline = time.monotonic() + seconds

def paths():
    task = f"pre{random.randrange(tasks)}"
    return [f"/tasks/{task}", f"/api/tasks/{task}", "/", "/api/callbacks?stage=complete&limit=100"]

def loop():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.monotonic() < deadline:
        for path in paths():
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - started)

threads = [threading.Thread(target=loop) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
latencies.sort()
print(json.dumps({"statuses": statuses, "count": len(latencies),
                  "p50": latencies[len(latencies) // 2] if latencies else 0,
                  "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0}))
"""

# adnanh/webhook: the hook appends the payload (its only argument) to a file, then prints the answer it sends.
APPEND = """#!/bin/sh
printf '%s\\n' "$1" >> {log}
printf '{{"status":"received"}}'
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

TOKEN = "bench-token-0123456789"


@dataclass(frozen=True)
class Run:
    """One load run: requests per second and latency percentiles, in seconds."""

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
    if "Non-2xx" in out or "Socket errors" in out:
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


def wait_listening(url: str, timeout: float = 120) -> float:
    """Seconds until `url` answers at all."""
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


def preload(state: Path, records: int, per_file: int = 1000) -> int:
    """Write `records` deliveries as archive files, as rotation would have left them; returns the task count.

    Three deliveries per task (text, first, complete), arriving evenly over the last 30 days. One document per
    stage is serialized and the rest are formatted from it, so a million take seconds, not minutes.
    """
    start = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / max(records, 1)
    stages = ("text", "first", "complete")
    templates = []
    for stage in stages:
        doc = {**delivery_doc(music(stage, task="TASK"), "AT", 600, "bench"), "id": -1, "duplicate": False}
        text = dumps({**doc, "task_state": stage}).replace("%", "%%")
        text = text.replace('"id":-1', '"id":%(id)d').replace('"AT"', '"%(at)s"').replace('"TASK"', '"pre%(task)d"')
        templates.append('"%(id)d":' + text)
    for first in range(1, records + 1, per_file):
        ids = range(first, min(first + per_file, records + 1))
        frags = {
            i: templates[i % 3]
            % {"id": i, "task": i // 3, "at": (start + step * i).isoformat(timespec="milliseconds")[:23] + "Z"}
            for i in ids
        }
        (state / f"callbacks-archive-callbacks-{ids[0]:09d}-{ids[-1]:09d}.json").write_bytes(
            render_fragments({"callbacks": frags})
        )
    return records // 3 + 1


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
            "server": {"port": port, "token": TOKEN},
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
                response = client.post(f"http://127.0.0.1:{port}/callback/{TOKEN}", json=music(task=f"al{i}"))
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


def read_latency(admin: str, tasks: int, count: int) -> dict[str, list[float]]:
    """Seconds per GET of /tasks/X and /api/tasks/X for random tasks of the preloaded log, one at a time."""
    found: dict[str, list[float]] = {"/tasks/X": [], "/api/tasks/X": []}
    with httpx.Client(base_url=admin, timeout=120) as client:
        for _ in range(count):
            task = f"pre{random.randrange(1, tasks)}"
            for label, path in (("/tasks/X", f"/tasks/{task}"), ("/api/tasks/X", f"/api/tasks/{task}")):
                started = time.perf_counter()
                response = client.get(path)
                found[label].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{path} answered {response.status_code}: {response.text[:200]}")
    return {label: sorted(values) for label, values in found.items()}


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0..1) of sorted `values`."""
    return values[min(len(values) - 1, int(len(values) * p))]


class Servers:
    """The servers of one benchmark run, stopped at exit however the run ends."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.running: list[subprocess.Popen[bytes]] = []
        self.port, self.admin_port = free_port(), free_port()
        atexit.register(_end_all, self.running)

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env, **kwargs)
        self.running.append(proc)
        return proc

    def bare(self, loop: str, http: str) -> str:
        """A bare Starlette endpoint on the given uvicorn stack; its callback URL."""
        port = free_port()
        self.spawn([sys.executable, "-c", BARE, str(port), loop, http])
        wait_listening(f"http://127.0.0.1:{port}/")
        return f"http://127.0.0.1:{port}/callback/x"

    def webhook(self) -> str | None:
        """adnanh/webhook appending each payload with a shell command; its hook URL, or None when not installed."""
        exe = shutil.which("webhook")
        if exe is None:
            return None
        script = self.work / "append.sh"
        script.write_text(APPEND.format(log=self.work / "webhook.jsonl"))
        script.chmod(0o755)
        hooks = self.work / "hooks.json"
        hook = {
            "id": "callback",
            "execute-command": str(script),
            "command-working-directory": str(self.work),
            "pass-arguments-to-command": [{"source": "entire-payload"}],
            "include-command-output-in-response": True,  # answer once the payload is appended, as relay does
            "http-methods": ["POST"],
        }
        hooks.write_text(json.dumps([hook]))
        port = free_port()
        self.spawn([exe, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)])
        wait_listening(f"http://127.0.0.1:{port}/")
        return f"http://127.0.0.1:{port}/hooks/callback"

    def relay(self, state: Path) -> tuple[subprocess.Popen[bytes], float]:
        """relay on `state`, and the seconds until its admin listener answers."""
        config = relay_config(self.work, state, self.port, self.admin_port)
        started = time.perf_counter()
        proc = self.spawn([sys.executable, "-m", "relay", "serve", "--config", str(config)])
        wait_listening(f"http://127.0.0.1:{self.admin_port}/healthz")
        return proc, time.perf_counter() - started

    def readers(self, tasks: int, seconds: float, concurrency: int) -> subprocess.Popen[bytes]:
        """Admin reads in a loop, back to back, from `concurrency` clients for `seconds`; prints what it saw."""
        args = [sys.executable, "-c", READERS, str(self.admin_port), str(tasks), f"{seconds:g}", str(concurrency)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=self.env)
        self.running.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback/{TOKEN}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def wait_indexed(log_path: Path, timeout: float) -> float:
    """Seconds until the read index holds every archive of the log."""
    started = time.perf_counter()
    while unindexed(log_path, archives(log_path)):
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"the read index was not built within {timeout:g} s")
        time.sleep(0.5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s runs, one round, 30,000 records")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--alerts", type=int, default=200, help="callbacks for the alert latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per server; medians are reported")
    parser.add_argument("--reads", type=int, default=100, help="GETs of each task view for the read latency")
    parser.add_argument("--readers", type=int, default=1, help="clients reading the admin pages back to back")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk (Debian's, in C) or an httpx one in Python; auto takes wrk when installed",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (the preloaded log)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.records, args.alerts, args.reads = 3, 1, 30_000, 20, 20
    load = args.load if args.load != "auto" else ("wrk" if shutil.which("wrk") else "python")
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    if not args.keep:
        atexit.register(shutil.rmtree, work, True)  # registered first, so it runs after the servers are stopped
    servers = Servers(work, {**os.environ, "NO_PROXY": "*"})
    notes = []

    baselines = {}
    fast = importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")
    if fast:
        baselines["bare, uvloop + httptools"] = servers.bare("uvloop", "httptools")
    else:
        notes.append("bare Starlette on uvloop + httptools skipped: pip install 'uvicorn[standard]'")
    baselines["bare, asyncio + h11"] = servers.bare("asyncio", "h11")
    best_bare = next(iter(baselines))
    hook = servers.webhook()
    if hook is not None:
        baselines["adnanh/webhook + sh append"] = hook
    else:
        notes.append("adnanh/webhook skipped: apt-get install webhook")

    def compare(targets: dict[str, str]) -> dict[str, Run]:
        # Alternating runs, medians: the machine's speed drifts between runs, and every server should see it.
        runs: dict[str, list[Run]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                runs[name].append(drive(url, args.seconds, load, work))
        return {name: median(found) for name, found in runs.items()}

    # An empty log.
    empty = work / "empty"
    empty.mkdir()
    relay, _ = servers.relay(empty)
    quiet = compare({**baselines, "relay": servers.relay_url})
    rss_empty = rss_mb(relay.pid)  # after the same traffic as at `records`, so both hold a full live file
    servers.stop(relay)

    # A log that grew to `records` over time: archives as rotation leaves them, in a state dir of its own.
    full = work / "full"
    full.mkdir()
    started = time.perf_counter()
    tasks = preload(full, args.records)
    written = time.perf_counter() - started
    relay, first_start = servers.relay(full)  # no read index yet: relay builds it in the background
    index_build = wait_indexed(full / "callbacks.json", timeout=3600)
    servers.stop(relay)
    relay, restart = servers.relay(full)
    reads = read_latency(servers.admin, tasks, args.reads)
    show = []
    for _ in range(3):
        config = relay_config(work, full, servers.port, servers.admin_port)
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "relay", "show", f"pre{random.randrange(1, tasks)}", "--config", str(config)],
            check=True,
            capture_output=True,
        )
        show.append(time.perf_counter() - began)
    at_full: dict[str, list[Run]] = {"bare": [], "relay": [], "relay, quiet": [], "relay, admin reads running": []}
    for _ in range(args.rounds):
        at_full["bare"].append(drive(baselines[best_bare], args.seconds, load, work))
        at_full["relay"].append(drive(servers.relay_url, args.seconds, load, work))
    rss_full = rss_mb(relay.pid)  # after the same traffic as the empty log's (reads add ~20 MB at any size)
    reader_stats = []
    for _ in range(args.rounds):  # quiet and read-loaded runs alternate, so the comparison sees the same machine
        at_full["relay, quiet"].append(drive(servers.relay_url, args.seconds, load, work))
        readers = servers.readers(tasks, args.seconds + 2, args.readers)
        time.sleep(1)
        at_full["relay, admin reads running"].append(drive(servers.relay_url, args.seconds, load, work))
        out, _ = readers.communicate(timeout=300)
        reader_stats.append(json.loads(out))
    full_runs = {name: median(found) for name, found in at_full.items()}
    rss_reads = rss_mb(relay.pid)
    servers.stop(relay)
    alerts = alert_latency(work, servers.env, args.alerts)

    report(args, load, quiet, best_bare, full_runs, reads, reader_stats, rss_empty, rss_full, restart, notes)
    print(f"RSS after the read-loaded runs too: {rss_reads:.0f} MB")
    ms = 1000
    print(
        f"\n{args.records:,} deliveries written as archives in {written:.1f} s; first start ready in "
        f"{first_start:.2f} s, read index built in the background in {index_build:.1f} s; `relay show X` (a process) "
        f"{statistics.median(show):.2f} s"
    )
    print(
        f"alert latency, callback -> json:// target: p50 {pct(alerts, 0.5) * ms:.1f} ms, "
        f"p99 {pct(alerts, 0.99) * ms:.1f} ms ({len(alerts)} complete callbacks, one at a time)"
    )


def report(
    args: argparse.Namespace,
    load: str,
    quiet: dict[str, Run],
    best_bare: str,
    full: dict[str, Run],
    reads: dict[str, list[float]],
    reader_stats: list[dict[str, Any]],
    rss_empty: float,
    rss_full: float,
    restart: float,
    notes: list[str],
) -> None:
    """Print every figure beside its target."""
    ms = 1000
    print(
        f"load generator: {load}, 10 concurrent keep-alive senders; medians of {args.rounds} alternating "
        f"{args.seconds:g} s runs; log of {args.records:,} deliveries"
    )
    for note in notes:
        print(f"note: {note}")
    print("\nthroughput and ack latency, empty log:")
    for name, run in quiet.items():
        print(f"  {name:28} {run.rps:8.0f} req/s   p50 {run.p50 * ms:6.1f} ms   p99 {run.p99 * ms:6.1f} ms")
    relay = quiet["relay"]
    bare_p99 = min(run.p99 for name, run in quiet.items() if name.startswith("bare"))
    print("\nfigure                                              measured          target")

    def line(figure: str, measured: str, target: str, met: bool) -> None:
        print(f"  {figure:50} {measured:17} {target:18} {'met' if met else 'MISSED'}")

    for name, run in quiet.items():
        if name == "relay":
            continue
        ratio = relay.rps / run.rps
        if name == "bare, uvloop + httptools":
            line("relay / bare Starlette on uvloop + httptools", f"{ratio:.2f}", ">= 0.5", ratio >= 0.5)
        elif name.startswith("adnanh"):
            line("relay / adnanh/webhook appending each payload", f"{ratio:.2f}", ">= 3", ratio >= 3)
        else:
            print(f"  {'relay / bare Starlette on asyncio + h11':50} {ratio:.2f}")
    limit = 2 * bare_p99 + 0.005
    line("relay ack p99", f"{relay.p99 * ms:.1f} ms", f"<= {limit * ms:.1f} ms", relay.p99 <= limit)
    ratio_empty = relay.rps / quiet[best_bare].rps
    ratio_full = full["relay"].rps / full["bare"].rps
    line(
        f"ratio at {args.records:,} / ratio empty",
        f"{ratio_full:.2f}/{ratio_empty:.2f}={ratio_full / ratio_empty:.2f}",
        ">= 0.9",
        ratio_full / ratio_empty >= 0.9,
    )
    for label, values in reads.items():
        p99 = pct(values, 0.99)
        line(
            f"{label} at {args.records:,} (p50, p99)",
            f"{pct(values, 0.5) * ms:.1f}, {p99 * ms:.1f} ms",
            "< 100 ms",
            p99 < 0.1,
        )
    quiet_p99, busy_p99 = full["relay, quiet"].p99, full["relay, admin reads running"].p99
    limit = max(0.05, 2 * quiet_p99)
    line(
        "ack p99 while admin reads run (quiet)",
        f"{busy_p99 * ms:.1f} ({quiet_p99 * ms:.1f}) ms",
        f"<= {limit * ms:.0f} ms",
        busy_p99 <= limit,
    )
    line(f"restart to ready at {args.records:,}", f"{restart:.2f} s", "< 5 s", restart < 5)
    line(
        f"RSS at {args.records:,} / empty",
        f"{rss_full:.0f}/{rss_empty:.0f} MB={rss_full / rss_empty:.2f}",
        "<= 1.5",
        rss_full / rss_empty <= 1.5,
    )
    reads_done = sum(s["count"] for s in reader_stats)
    statuses: dict[str, int] = {}
    for stats in reader_stats:
        for status, count in stats["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    print(
        f"\nadmin reads while loaded ({args.readers} client(s) reading /tasks/X, /api/tasks/X, / and "
        f"/api/callbacks?stage=complete&limit=100 back to back): {reads_done} in {args.rounds} runs, "
        f"statuses {statuses}, "
        f"p50 {statistics.median(s['p50'] for s in reader_stats) * ms:.1f} ms, "
        f"p99 {max(s['p99'] for s in reader_stats) * ms:.1f} ms; relay then did "
        f"{full['relay, admin reads running'].rps:.0f} req/s (quiet {full['relay, quiet'].rps:.0f})"
    )


if __name__ == "__main__":
    main()
