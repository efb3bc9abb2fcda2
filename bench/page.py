"""Benchmark (not a test): how long the admin page takes as the log grows.

Preloads a log with N deliveries as rotation leaves them (archives of 1000), starts relay, and times the index,
a search that matches nothing (it reads up to the scan limit), a filter, a recent task's page and an old one's.
Usage: .venv/bin/python bench/page.py [--records 0,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import preload, wait_indexed
from tests.conftest import build_relay, end_relay
from tests.family import music

PATHS = {
    "index": "/",
    "search, no match": "/?q=no-such-title",
    "state=failed": "/?state=failed",
    "recent task": "/tasks/recent-1",
    "oldest task": "/tasks/pre1",
}


def measure(records: int, rounds: int) -> dict[str, float]:
    """Median milliseconds per path with `records` deliveries in the log."""
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state"
        state.mkdir()
        if records:
            preload(state, records)
        relay = build_relay(Path(folder))
        try:
            wait_indexed(relay.log_path, timeout=3600)  # the first start builds the read index in the background
            for n in range(30):
                relay.post(music("complete", task=f"recent-{n}"))
            times: dict[str, list[float]] = {name: [] for name in PATHS}
            for _ in range(rounds):
                for name, path in PATHS.items():
                    if name == "oldest task" and not records:
                        times[name].append(float("nan"))
                        continue
                    started = time.perf_counter()
                    response = httpx.get(relay.admin + path, timeout=300)
                    times[name].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
            return {name: statistics.median(values) for name, values in times.items()}
        finally:
            end_relay(relay)


def main() -> None:
    """Print a table of median page times per log size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", default="0,100000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(n) for n in args.records.split(",")]
    results = {n: measure(n, args.rounds) for n in sizes}
    print("page".ljust(20) + "".join(f"{n:>12,} deliveries" for n in sizes))
    for name in PATHS:
        print(name.ljust(20) + "".join(f"{results[n][name]:>20.0f} ms" for n in sizes))


if __name__ == "__main__":
    main()
