"""Admin reads never hold up acknowledgements: they run on threads of their own, bounded in time and number.

Proved without timing: a hook holds every read on its thread, and callbacks are acknowledged (and the log rotates)
while every read is held; then reads flow continuously over a largish log while callbacks keep being acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.store import archives
from relay.web.runner import ReadRunner, json_body
from tests.conftest import wait_for
from tests.family import music
from tests.inprocess import InProcessRelay, serve_in_process
from tests.test_reads import write_archive

READS = [
    "/tasks/held",
    "/api/tasks/held",
    "/",
    "/?state=failed",
    "/api/callbacks?stage=complete",
    "/api/callbacks?failed=1&limit=10000",
    "/rejected",
]


class Gate:
    """A ReadRunner's `before_read` hook: while closed, every read waits on its thread."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.held = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.held += 1
        assert self.open.wait(120), "a test left the gate closed"


def read_continuously(base: str, stop: threading.Event, statuses: list[int]) -> None:
    """GET the read paths in turn until `stop`, noting each status."""
    with httpx.Client(base_url=base, timeout=120) as client:
        while not stop.is_set():
            for path in READS:
                statuses.append(client.get(path).status_code)


def test_acknowledgements_never_wait_for_admin_reads(tmp_path: Path) -> None:
    """With every read thread held and more reads queued, callbacks are acknowledged and the log rotates; once
    released, reads run continuously over a 5,000-delivery log while callbacks keep being acknowledged."""
    for first in range(1, 5001, 500):
        write_archive(tmp_path, "callbacks", range(first, first + 500))  # a log that grew before this start
    gate = Gate()
    stop = threading.Event()
    statuses: list[int] = []
    readers = []
    reads = ReadRunner(timeout=120, before_read=gate)
    with serve_in_process(tmp_path, {"reads": reads}, storage={"rotate_records": 10}) as r:
        try:
            with httpx.Client(timeout=30) as client:
                for stage in ("first", "complete"):
                    assert client.post(r.callback_url, json=music(stage, task="held")).status_code == 200
                readers = [threading.Thread(target=read_continuously, args=(r.admin, stop, statuses)) for _ in range(4)]
                for reader in readers:
                    reader.start()
                wait_for(lambda: gate.held == 2)  # both read threads are inside a read; two more reads queue
                archived = len(archives(r.relay.store.path))
                for n in range(30):
                    assert client.post(r.callback_url, json=music(task=f"ack{n}")).status_code == 200
                assert statuses == [], "a read finished while the gate was closed"
                assert gate.held == 2
                assert len(archives(r.relay.store.path)) > archived, "rotation waited for the held reads"
                gate.open.set()
                wait_for(lambda: len(statuses) > 2 * len(READS))
                for n in range(30):  # reads run continuously meanwhile
                    assert client.post(r.callback_url, json=music(task=f"during{n}")).status_code == 200
                view = client.get(f"{r.admin}/api/tasks/held").json()
                assert [d["stage"] for d in view["deliveries"]] == ["first", "complete"]
        finally:
            gate.open.set()
            stop.set()
            for reader in readers:
                reader.join(120)
    assert set(statuses) == {200}
    assert gate.held >= 3 * len(READS)


def test_reads_out_of_time_are_504_and_reads_without_a_turn_503(tmp_path: Path) -> None:
    """A read that runs past read_timeout is answered 504, one that cannot get a thread within it 503."""
    gate = Gate()
    answers: list[httpx.Response] = []

    def read(r: InProcessRelay) -> None:
        answers.append(httpx.get(f"{r.admin}/api/tasks/x", timeout=60))

    with serve_in_process(tmp_path, {"reads": ReadRunner(timeout=1.0, before_read=gate)}) as r:
        try:
            slow = [threading.Thread(target=read, args=(r,)) for _ in range(2)]
            for thread in slow:
                thread.start()
            wait_for(lambda: gate.held == 2)
            busy = httpx.get(f"{r.admin}/", timeout=60)
            for thread in slow:
                thread.join(60)
        finally:
            gate.open.set()
        assert busy.status_code == 503
        assert "busy" in busy.json()["error"]
        assert [a.status_code for a in answers] == [504, 504]
        assert "since=" in answers[0].json()["error"]
        # Released, the threads end their reads at once and serve again.
        wait_for(lambda: httpx.get(f"{r.admin}/api/callbacks", timeout=60).status_code == 200)


def test_reads_in_a_row_leave_the_loop_its_share() -> None:
    """After a read that took 50 ms of CPU, the next read starts no sooner than 50 ms later (share 0.5)."""
    marks: dict[str, float] = {}

    def busy(check: Any) -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.05:
            pass
        marks["busy done"] = time.monotonic()

    def next_read(check: Any) -> None:
        marks["next started"] = time.monotonic()

    async def scenario() -> None:
        reads = ReadRunner(share=0.5)
        await reads.run(busy)
        await reads.run(next_read)

    asyncio.run(scenario())
    assert marks["next started"] - marks["busy done"] >= 0.05


VALUES: dict[str, dict[str, Any]] = {
    "lists": {"callbacks": [{"a": 1, "t": "é", "n": None}, {"b": [1.5, True]}], "state": "complete"},
    "empty-list": {"rejected": []},
    "nested": {"task_id": "x", "deliveries": [{"tracks": [{"title": "<b>"}]}], "alerts": []},
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_json_body_is_the_json_of_the_value(value: dict[str, Any]) -> None:
    """Encoding item by item gives the same document as one json.dumps."""
    assert json.loads(json_body(value)) == value
