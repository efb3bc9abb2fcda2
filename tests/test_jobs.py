"""The durable job queue in-process: a real DeliveryStore and JobQueue on tmp files, a scripted job kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from relay.errors import StoreError
from relay.ingest import delivery_doc
from relay.job_files import KEEP_FINISHED, job_archives
from relay.jobs import Attempt, Job, JobQueue, JobSpec, plan_each
from relay.model import Delivery
from relay.store import DeliveryStore, now_iso


class Scripted:
    """A job kind that queues one job per delivery with a task id and answers attempts from a script."""

    name = "scripted"
    done_state = "done"
    give_up_after = 3600.0
    retry_base = 0.01
    retry_max = 0.02
    per_target = 4

    def __init__(self, answer: Callable[[Job], Attempt] | None = None) -> None:
        self.answer = answer or (lambda job: Attempt(True))
        self.performed: list[str] = []

    def decide(self, delivery: Delivery) -> list[JobSpec]:
        task = delivery.get("task_id")
        return [JobSpec(f"job:{task}", [("t", "target")], {}, task, delivery["id"])] if task else []

    def plan(self, target: str, due: list[Job], now: float) -> tuple[list[list[Job]], float | None]:
        return plan_each(due, self.per_target)

    async def perform(self, target: str, jobs: list[Job]) -> list[Attempt]:
        self.performed += [job.key for job in jobs]
        return [self.answer(job) for job in jobs]


def callback(task: str) -> dict[str, Any]:
    """A minimal successful music callback for `task`."""
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": task, "data": []}}
    return delivery_doc(body, now_iso(), 100, None)


@asynccontextmanager
async def running(tmp_path: Path, kind: Scripted) -> AsyncIterator[tuple[DeliveryStore, JobQueue]]:
    """A store and a queue over it, opened and closed like the runtime does."""
    store = DeliveryStore(tmp_path / "callbacks.json")
    await store.open()
    queue = JobQueue(tmp_path / "outbox.json", store, [kind])
    try:
        async with queue:
            yield store, queue
    finally:
        await store.close()


def fill_disk(queue: JobQueue, refuses: Callable[[str, int | None], bool]) -> None:
    """Make the queue's writes fail as on a full disk wherever `refuses(table, doc_id)` says so."""
    real_put = queue.db.put

    async def put(table: str, doc: dict[str, Any], doc_id: int | None = None) -> int:
        if refuses(table, doc_id):
            raise StoreError("No space left on device")
        return await real_put(table, doc, doc_id)

    queue.db.put = put  # type: ignore[method-assign]


async def until(condition: Callable[[], Any], limit: float = 20.0) -> None:
    """Poll `condition` on the loop with a generous limit."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


def test_recorded_delivery_becomes_a_job_done_once(tmp_path: Path) -> None:
    """A delivery the kind wants is queued once per key and performed once, and its row ends done."""

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (store, queue):
            await store.record(callback("a"))
            await store.record(callback("a"))  # same key: not queued again
            await until(lambda: queue.count("scripted", "done") == 1)
            assert kind.performed == ["job:a"]

    asyncio.run(main())


def test_failed_write_of_a_result_never_causes_a_resend(tmp_path: Path) -> None:
    """Issue #10.4: when the outbox cannot record an attempt, the job is not tried again before its backoff."""

    async def main() -> None:
        kind = Scripted(lambda job: Attempt(False, "target down"))
        kind.retry_base = kind.retry_max = 3600.0
        async with running(tmp_path, kind) as (store, queue):
            fill_disk(queue, lambda table, doc_id: table == "scripted" and doc_id is not None)
            await store.record(callback("b"))
            await until(lambda: kind.performed == ["job:b"] and not queue._inflight)
            for _ in range(50):  # the worker's own dispatch, run again and again: nothing is due
                queue._dispatch()
            await asyncio.sleep(0)
            assert kind.performed == ["job:b"]

    asyncio.run(main())


def test_success_whose_result_is_not_recorded_is_not_repeated_while_running(tmp_path: Path) -> None:
    """An attempt that succeeded but could not be recorded is held back for good in this process."""

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (store, queue):
            fill_disk(queue, lambda table, doc_id: table == "scripted" and doc_id is not None)
            await store.record(callback("c"))
            await until(lambda: kind.performed == ["job:c"] and not queue._inflight)
            for _ in range(20):
                queue._dispatch()
            await asyncio.sleep(0.05)
            assert kind.performed == ["job:c"]

    asyncio.run(main())


def test_cursor_waits_for_jobs_that_could_not_be_queued(tmp_path: Path) -> None:
    """Issue #10.5: a delivery recorded while its job cannot be queued gets it once the disk recovers."""

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (store, queue):
            broken = True
            fill_disk(queue, lambda table, doc_id: broken and table != "meta")
            first = await store.record(callback("d"))
            await store.record(callback("e"))
            await until(lambda: queue._lagging)
            assert queue._cursor < first["id"]
            broken = False
            await until(lambda: sorted(kind.performed) == ["job:d", "job:e"])

    asyncio.run(main())


def test_cursor_is_not_persisted_past_unqueued_jobs_across_restart(tmp_path: Path) -> None:
    """Issue #10.5: after a stop with jobs unqueued, the next start queues them from the log."""

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (store, queue):
            fill_disk(queue, lambda table, doc_id: table != "meta")
            await store.record(callback("f"))
            await until(lambda: queue._lagging)
        again = Scripted()
        async with running(tmp_path, again):
            await until(lambda: again.performed == ["job:f"])

    asyncio.run(main())


def test_finished_jobs_leave_memory_and_keep_deduplicating(tmp_path: Path) -> None:
    """Issue #10.7: finished rows move to archive files; their keys still dedupe after a restart."""
    count = 2 * KEEP_FINISHED + 50

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (store, queue):
            for i in range(count):
                await store.record(callback(f"t{i}"))
            await until(lambda: queue.count("scripted", "done") == count)
            await queue._tidy()
            assert len(queue.db.table("scripted")) == KEEP_FINISHED
            assert job_archives(tmp_path / "outbox.json", "scripted")
        again = Scripted()
        async with running(tmp_path, again) as (store, queue):
            assert await queue.enqueue("scripted", JobSpec("job:t0", [("t", "target")])) is None
            assert again.performed == []

    asyncio.run(main())


@pytest.mark.parametrize("retry", [False, True], ids=["permanent", "until-give-up"])
def test_failing_job_ends_dead(tmp_path: Path, retry: bool) -> None:
    """A permanent failure is dead at once; a retried one is dead after the kind's give-up time."""

    async def main() -> None:
        kind = Scripted(lambda job: Attempt(False, "no", retry=retry))
        kind.give_up_after = 0.0 if retry else 3600.0
        async with running(tmp_path, kind) as (store, queue):
            await store.record(callback("g"))
            await until(lambda: queue.count("scripted", "dead") == 1)
            (row,) = queue.for_task("scripted", "g")
            assert row["targets"][0]["error"] == "no"

    asyncio.run(main())


@pytest.mark.parametrize("ticks", range(4), ids=lambda n: f"{n}-ticks")
def test_worker_ends_when_cancelled_as_it_is_woken(tmp_path: Path, ticks: int) -> None:
    """A cancel that arrives as the worker is woken ends it (3.11's wait_for could swallow it: a hang at stop)."""

    async def main() -> None:
        kind = Scripted()
        async with running(tmp_path, kind) as (_store, queue):
            await asyncio.sleep(0.05)  # the worker is waiting for work
            task = queue._task
            assert task is not None
            queue._wake.set()
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=10)
            assert done, "the worker went on after it was cancelled"

    asyncio.run(main())
