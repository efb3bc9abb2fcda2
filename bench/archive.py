"""Benchmark (not a test): the archive's downloads on loopback.

1. Throughput: relay downloading one large file (POST a callback, time until the file is in place, fsynced and
   renamed) against `curl -o` fetching the same bytes from the same server (also with an fsync after it, the fair
   comparison), at normal priority and at the download workers' niceness. Target: relay >= 0.8x curl.
2. Ack latency: p50/p99 of sequential callbacks while relay is quiet, and while four large downloads run.
   Target: loaded p99 within 1.5x of quiet.
The file server runs in its own process (tests/asset_server.py); for the latency run at nice 19, since a real
provider's file server does not run on relay's machine.
Usage: .venv/bin/python bench/archive.py [--size-mb 300] [--rounds 3] [--callbacks 400] [--load-mb 500]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import _end_all, wait_listening
from relay.archive.worker import WORKER_NICE
from tests.conftest import free_port, write_config
from tests.family import TRACK, music

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
# The file server ends with the benchmark, however the benchmark ends.
SERVER = (
    "import os, sys, time; sys.path.insert(0, {root!r}); from tests.asset_server import AssetServer; "
    "parent = os.getppid(); s = AssetServer(); print(s.port, flush=True)\n"
    "while os.getppid() == parent: time.sleep(0.5)"
)


def start_assets(procs: list[subprocess.Popen[bytes]], nice: int = 0) -> int:
    command = ["nice", "-n", str(nice), sys.executable, "-c", SERVER.format(root=str(ROOT))]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    return int(proc.stdout.readline())


def start_relay(work: Path, procs: list[subprocess.Popen[bytes]], concurrency: int, files: Path) -> tuple[str, str]:
    port, admin = free_port(), free_port()
    config = write_config(
        work,
        {
            "server": {"port": port, "token": TOKEN},
            "admin": {"port": admin},
            "storage": {"state_dir": str(work / "state")},
            "tunnel": {"provider": "none", "public_url": "https://bench.test"},
            "archive": {
                "dir": str(files),
                "allow_private": True,
                "concurrency": concurrency,
                "max_file_bytes": 1 << 40,
                "min_free_bytes": 1 << 30,
            },
            "log": {"level": "warning"},
        },
    )
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(config)], cwd=work)
    procs.append(proc)
    wait_listening(f"http://127.0.0.1:{admin}/healthz")
    return f"http://127.0.0.1:{port}/callback/{TOKEN}", f"http://127.0.0.1:{admin}"


def callback(task: str, url: str) -> dict[str, Any]:
    return music(task=task, tracks=[{**TRACK, "id": task, "source_audio_url": url, "image_url": ""}])


FILES: list[Path] = []


def final_path(work: Path, task: str) -> Path:
    return FILES[0] / task / f"Iron Man [{task}].mp3"


def relay_download(work: Path, callback_url: str, url: str, task: str) -> float:
    started = time.perf_counter()
    httpx.post(callback_url, json=callback(task, url), timeout=30).raise_for_status()
    dest = final_path(work, task)
    while not dest.exists():
        time.sleep(0.002)
    return time.perf_counter() - started


def curl_download(url: str, dest: Path, fsync: bool, nice: int = 0) -> float:
    started = time.perf_counter()
    subprocess.run(["nice", "-n", str(nice), "curl", "-sS", "--fail", "-o", str(dest), url], check=True)
    if fsync:
        fd = os.open(dest, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - started


def ack_latencies(callback_url: str, count: int, prefix: str) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            body = music(task=f"{prefix}{i}", tracks=[])
            started = time.perf_counter()
            client.post(callback_url, json=body).raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callbacks", type=int, default=400)
    parser.add_argument("--load-mb", type=int, default=500, help="size of each of the four downloads under load")
    parser.add_argument("--archive-dir", help="put the archive elsewhere (e.g. /dev/shm) to tell disk from CPU effects")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed: apt-get install curl")
    work = Path(tempfile.mkdtemp(prefix="relay-bench-archive-"))
    atexit.register(shutil.rmtree, work, True)  # registered first, so it runs after the processes ended
    if args.archive_dir:
        atexit.register(shutil.rmtree, Path(args.archive_dir) / "relay-bench-files", True)
    procs: list[subprocess.Popen[bytes]] = []
    atexit.register(_end_all, procs)
    assets = start_assets(procs)
    files = Path(args.archive_dir) / "relay-bench-files" if args.archive_dir else work / "files"
    FILES.append(files)
    callback_url, _ = start_relay(work, procs, concurrency=4, files=files)
    size = args.size_mb * 1_000_000

    relay_download(work, callback_url, f"http://127.0.0.1:{assets}/bytes/1000", "warmup")  # workers started
    relay_times, curl_times, curl_sync_times, curl_nice_times = [], [], [], []
    for r in range(args.rounds):
        url = f"http://127.0.0.1:{assets}/bytes/{size}?seed={r}"
        curl_times.append(curl_download(url, work / "curl.bin", fsync=False))
        curl_sync_times.append(curl_download(url, work / "curl.bin", fsync=True))
        curl_nice_times.append(curl_download(url, work / "curl.bin", fsync=True, nice=WORKER_NICE))
        relay_times.append(relay_download(work, callback_url, url, f"tp{r}"))
        final_path(work, f"tp{r}").unlink()
    (work / "curl.bin").unlink()
    mb = size / 1e6
    relay_rate = mb / statistics.median(relay_times)
    curl_rate = mb / statistics.median(curl_times)
    curl_sync_rate = mb / statistics.median(curl_sync_times)
    curl_nice_rate = mb / statistics.median(curl_nice_times)
    print(f"throughput, {args.size_mb} MB file, median of {args.rounds}:")
    print(f"  curl -o:            {curl_rate:7.0f} MB/s")
    print(f"  curl -o + fsync:    {curl_sync_rate:7.0f} MB/s")
    print(f"  same, nice {WORKER_NICE}:      {curl_nice_rate:7.0f} MB/s (the priority relay's download workers run at)")
    print(f"  relay (to renamed): {relay_rate:7.0f} MB/s")
    print(
        f"  relay / curl = {relay_rate / curl_rate:.2f}x, / curl+fsync = {relay_rate / curl_sync_rate:.2f}x, "
        f"/ curl+fsync at nice {WORKER_NICE} = {relay_rate / curl_nice_rate:.2f}x"
    )

    ack_latencies(callback_url, 50, "warm")
    load = args.load_mb * 1_000_000
    # Real downloads come from servers elsewhere: this one's CPU is not relay's machine's, so it yields to relay.
    remote = start_assets(procs, nice=19)
    quiet_p99, loaded_p99, quiet_all, loaded_all, running = [], [], [], [], []
    for r in range(args.rounds):
        quiet = ack_latencies(callback_url, args.callbacks, f"quiet{r}-")
        tasks = [f"big{r}-{i}" for i in range(4)]
        for i, task in enumerate(tasks):
            url = f"http://127.0.0.1:{remote}/bytes/{load}?seed={100 * r + i}"
            httpx.post(callback_url, json=callback(task, url), timeout=30).raise_for_status()
        parts = [final_path(work, t).with_name(f".{final_path(work, t).name}.part") for t in tasks]
        while not all(p.exists() for p in parts):
            time.sleep(0.01)
        loaded = ack_latencies(callback_url, args.callbacks, f"loaded{r}-")
        running.append(sum(p.exists() for p in parts))
        for task in tasks:  # the next quiet round starts when they are done
            while not final_path(work, task).exists():
                time.sleep(0.05)
            final_path(work, task).unlink()
        quiet_p99.append(pct(quiet, 0.99))
        loaded_p99.append(pct(loaded, 0.99))
        quiet_all += quiet
        loaded_all += loaded
    print(f"ack latency, {args.callbacks} sequential callbacks per round, {args.rounds} rounds:")
    print(f"  quiet:                  p50 {pct(quiet_all, 0.5):6.2f} ms  p99 per round {_ms(quiet_p99)}")
    print(
        f"  four downloads running: p50 {pct(loaded_all, 0.5):6.2f} ms  p99 per round {_ms(loaded_p99)} "
        f"({min(running)}-{max(running)}/4 downloads still running at the end of each round)"
    )
    ratio = statistics.median(loaded_p99) / statistics.median(quiet_p99)
    print(f"  median p99 loaded / quiet = {ratio:.2f}x")


def _ms(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " ms"


if __name__ == "__main__":
    main()
