"""One durable job queue for everything relay does after the `200`: alerts, downloads, forwards.

Each job is a row of its kind's table in `outbox.json` (a JournaledDB, so rows are as crash-safe as the log).
A row has one entry per target ("lane": an Apprise target, a forward target, the archive); targets that
succeeded are never tried again. Kinds plug in what differs (which jobs a delivery calls for, how one attempt is
made, how due jobs are grouped); the queue owns what is the same: the catch-up cursor over the log, dedupe by key,
backoff with jitter across restarts, the dead state, and moving finished rows out of memory.

Delivery is at least once: a crash between an attempt and recording its result repeats that one attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from relay.errors import StoreError
from relay.job_files import KEEP_FINISHED, archive_finished, recent_keys
from relay.job_kinds import Attempt, Job, JobKind, JobSpec, KindView, backoff, plan_each
from relay.journal import JournaledDB
from relay.model import Delivery
from relay.store import DeliveryStore, now_iso, read_all

__all__ = ["Attempt", "Job", "JobKind", "JobQueue", "JobSpec", "KindView", "backoff", "plan_each"]

logger = logging.getLogger("relay.jobs")

#: How many job keys per kind are remembered for dedupe (like the log's duplicate memory).
MEMORY = 20_000
#: How often a queue that could not record what it decided looks at the log again.
CATCH_UP_RETRY = 2.0


#: Hears of job changes: (kind, row).
JobListener = Callable[[str, dict[str, Any]], None]


class JobQueue:
    """The durable queue, its feed from the log and the worker that performs jobs."""

    def __init__(self, path: Path, store: DeliveryStore, kinds: Sequence[JobKind]) -> None:
        self.path = path
        self.store = store
        self.kinds = {kind.name: kind for kind in kinds}
        self.db = JournaledDB(path, (*self.kinds, "meta"))
        self._keys: dict[str, OrderedDict[str, None]] = {name: OrderedDict() for name in self.kinds}
        self._cursor = 0
        self._lagging = False  # a decision could not be recorded: the cursor waits and the log is read again
        self._chain: asyncio.Future[Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._busy: dict[tuple[str, str], int] = {}
        # In memory only: when each (kind, row, target) may be tried again. An attempt whose result could not be
        # recorded (a full disk) is still held back, so a failing disk never turns into a burst of resends.
        self._hold: dict[tuple[str, int, str], float] = {}
        self._record_lock = asyncio.Lock()
        self._listeners: list[JobListener] = []

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the queue, catch up on deliveries recorded while relay was down, start working."""
        fresh = not self.path.exists()
        self.db.open()
        await self.db.start()
        newest = self.store.db.next_id("callbacks") - 1
        if fresh:  # a new queue does not act on history recorded before it existed
            await self.db.put("meta", {"cursor": newest}, 1)
        self._cursor = self._stored_cursor()
        for name in self.kinds:
            for key in await asyncio.to_thread(recent_keys, self.path, name, self.db.table(name), MEMORY):
                self._remember(name, key)
        await self._catch_up()
        self.store.subscribe(self.offer)
        self._task = asyncio.create_task(self._run(), name="jobs")

    async def stop(self) -> None:
        """Stop working; attempts in flight get a moment to finish, everything else stays pending on disk."""
        self.store.unsubscribe(self.offer)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10.0)
        if self._chain is not None:
            with contextlib.suppress(Exception):
                await self._chain
        with contextlib.suppress(StoreError):  # logged; a lagging cursor only means re-reading, keys dedupe
            await self._persist_cursor()
        await self.db.close()

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background; `stop()` gives it a moment to finish."""
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def subscribe(self, listener: JobListener) -> None:
        """Call `listener(kind, row)` on the loop whenever a job is queued or one of its attempts is recorded."""
        self._listeners.append(listener)

    def _changed(self, kind: str, row: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, row)
            except Exception:  # a listener's bug (the page's) must not fail a job
                logger.exception("job listener failed")

    # -- intake --------------------------------------------------------------------------------------------

    def offer(self, delivery: Delivery) -> None:
        """Store subscriber: queue what a recorded delivery calls for, without delaying its acknowledgement."""
        previous = self._chain
        wanted = self._wanted(delivery)  # decided once; enqueue skips a key an earlier delivery queued meanwhile
        if (previous is None or previous.done()) and not self._lagging and not wanted:
            self._cursor = max(self._cursor, delivery["id"])  # nothing to do: decided without a task
            return
        self._chain = asyncio.ensure_future(self._after(previous, delivery, wanted))

    async def _after(
        self, previous: asyncio.Future[Any] | None, delivery: Delivery, wanted: list[tuple[str, JobSpec]]
    ) -> None:
        if previous is not None:  # in order, so the cursor only moves forward
            with contextlib.suppress(Exception):
                await previous
        if self._lagging:
            return  # the catch-up reads this delivery from the log
        await self._consider(delivery, wanted)

    def _wanted(self, delivery: Delivery) -> list[tuple[str, JobSpec]]:
        wanted = []
        for name, kind in self.kinds.items():
            for spec in kind.decide(delivery):
                if spec.key not in self._keys[name]:
                    wanted.append((name, spec))
        return wanted

    async def _consider(self, delivery: Delivery, wanted: list[tuple[str, JobSpec]] | None = None) -> None:
        try:
            for name, spec in self._wanted(delivery) if wanted is None else wanted:
                await self.enqueue(name, spec)
        except StoreError as exc:
            # The cursor stays before this delivery until its jobs are durable; the log is read again later.
            logger.error("cannot queue jobs for delivery %s, will retry: %s", delivery.get("id"), exc)
            self._lagging = True
            self._wake.set()
            return
        except Exception:  # a kind's bug must not stop the queue for every later delivery
            logger.exception("cannot decide the jobs of delivery %s", delivery.get("id"))
        self._cursor = max(self._cursor, delivery["id"])
        with contextlib.suppress(StoreError):  # lagging is harmless: a re-considered job's key is known
            await self._persist_cursor()

    async def _catch_up(self) -> None:
        """Consider every delivery after the cursor, from the log."""
        self._lagging = False
        newest = self.store.db.next_id("callbacks") - 1
        if self._cursor >= newest:
            return
        for delivery in await asyncio.to_thread(read_all, self.store.path, "callbacks", None, self._cursor):
            await self._consider(delivery)  # type: ignore[arg-type]
            if self._lagging:
                return
        with contextlib.suppress(StoreError):
            await self._persist_cursor()

    async def enqueue(self, kind: str, spec: JobSpec) -> int | None:
        """Record a job durably (before any attempt) and wake the worker; None when its key was queued before."""
        if spec.key in self._keys[kind]:
            return None
        now = time.time()
        row = {
            **spec.data,
            "key": spec.key,
            "task_id": spec.task_id,
            "delivery_id": spec.delivery_id,
            "created_at": now_iso(),
            "created": now,
            "state": "pending" if spec.targets else self.kinds[kind].done_state,
            "targets": [
                {"key": key, "target": label, "state": "pending", "attempts": 0, "next_at": 0.0, "error": None}
                for key, label in spec.targets
            ],
        }
        if not spec.targets:
            row["finished"] = now
        self._remember(kind, spec.key)
        try:
            doc_id = await self.db.put(kind, row)
        except BaseException:
            self._keys[kind].pop(spec.key, None)
            raise
        self._wake.set()
        self._changed(kind, row)
        return doc_id

    def _remember(self, kind: str, key: str) -> None:
        keys = self._keys[kind]
        keys[key] = None
        keys.move_to_end(key)
        while len(keys) > MEMORY:
            keys.popitem(last=False)

    def _stored_cursor(self) -> int:
        return int(self.db.table("meta").get(1, {}).get("cursor", 0))

    async def _persist_cursor(self) -> None:
        if self._cursor != self._stored_cursor():
            await self.db.put("meta", {"cursor": self._cursor}, 1)

    # -- reporting -----------------------------------------------------------------------------------------

    def count(self, kind: str, state: str, since: float = 0.0) -> int:
        """Rows of a kind in a state (pending, dead, …), finished after `since` when given."""
        rows = self.db.table(kind).values()
        return sum(1 for r in rows if r["state"] == state and (not since or r.get("finished", 0) > since))

    def for_task(self, kind: str, task_id: str) -> list[dict[str, Any]]:
        """The live rows of one task (finished rows move to archives after a while; see job_files)."""
        return [row for row in self.db.table(kind).values() if row.get("task_id") == task_id]

    # -- work ----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        last_tidy = time.monotonic()
        while True:
            if self._lagging:
                await self._catch_up()
            next_due = self._dispatch()
            if self._lagging:
                next_due = min(next_due or math.inf, time.time() + CATCH_UP_RETRY)
            if time.monotonic() - last_tidy > 5.0:
                last_tidy = time.monotonic()
                await self._tidy()
            self._wake.clear()
            delay = None if next_due is None else min(5.0, max(0.05, next_due - time.time()))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as the
            # event is set, and the worker would then outlive stop() (seen as a hang at shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay if delay is not None else 5.0):
                    await self._wake.wait()

    def _dispatch(self) -> float | None:
        """Start what is due, per kind and target; return when something next becomes due."""
        now = time.time()
        next_due: float | None = None
        for name, kind in self.kinds.items():
            due: dict[str, list[Job]] = {}
            for doc_id, row in self.db.table(name).items():
                if row["state"] != "pending":
                    continue
                for entry in row["targets"]:
                    if entry["state"] != "pending":
                        continue
                    at = max(entry["next_at"], self._hold.get((name, doc_id, entry["key"]), 0.0))
                    if at <= now:
                        due.setdefault(entry["key"], []).append(_job(doc_id, row, entry))
                    elif at != math.inf:
                        next_due = min(next_due or at, at)
            for target, jobs in due.items():
                free = kind.per_target - self._busy.get((name, target), 0)
                if free <= 0:
                    continue
                groups, wait_until = kind.plan(target, jobs, now)
                if wait_until is not None:
                    next_due = min(next_due or wait_until, wait_until)
                for group in groups[:free]:
                    self._start(name, target, group)
        return next_due

    def _start(self, name: str, target: str, group: list[Job]) -> None:
        for job in group:  # not due again while in flight, whatever happens to its result
            self._hold[(name, job.id, target)] = math.inf
        self._busy[(name, target)] = self._busy.get((name, target), 0) + 1
        task = asyncio.create_task(self._attempt(name, target, group), name=f"{name}:{target}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _attempt(self, name: str, target: str, group: list[Job]) -> None:
        kind = self.kinds[name]
        try:
            try:
                results = await kind.perform(target, group)
            except Exception as exc:  # a kind's bug is this attempt's failure, not the worker's end
                logger.exception("%s to %s failed unexpectedly", name, target)
                results = [Attempt(False, f"{type(exc).__name__}: {exc}")] * len(group)
            for job, result in zip(group, results, strict=True):
                await self._record(name, job, target, result)
        finally:
            self._busy[(name, target)] -= 1
            self._wake.set()

    async def _record(self, name: str, job: Job, target: str, result: Attempt) -> None:
        kind = self.kinds[name]
        now = time.time()
        attempts = job.attempts + 1
        dead = not result.ok and (not result.retry or now - job.created >= kind.give_up_after)
        next_at = 0.0 if result.ok or dead else now + backoff(attempts, kind.retry_base, kind.retry_max)
        hold_key = (name, job.id, target)
        self._hold[hold_key] = math.inf if result.ok or dead else next_at
        async with self._record_lock:  # targets of one row finish concurrently: serialize read-modify-write
            row = self.db.table(name).get(job.id)
            if row is None:
                return
            entries = []
            for entry in row["targets"]:
                if entry["key"] == target:
                    entry = {**entry, **(result.result or {}), "attempts": attempts, "error": result.error}
                    entry["at"] = now_iso()
                    entry["next_at"] = next_at
                    if result.ok:
                        entry["state"] = result.state or kind.done_state
                    elif dead:
                        entry["state"] = "dead"
                entries.append(entry)
            states = {e["state"] for e in entries}
            state = "pending" if "pending" in states else ("dead" if "dead" in states else kind.done_state)
            updated = {**row, "targets": entries, "state": state}
            if state != "pending":
                updated["finished"] = now
            try:
                await self.db.put(name, updated, job.id)
            except StoreError as exc:
                logger.error("cannot record a %s attempt (it is not repeated before its backoff): %s", name, exc)
                return
        self._changed(name, updated)
        if result.ok or dead:
            self._hold.pop(hold_key, None)  # the row itself now says so

    async def _tidy(self) -> None:
        """Move finished rows beyond the newest `KEEP_FINISHED` of each kind into archive files."""
        for name in self.kinds:
            rows = self.db.table(name)
            finished = [doc_id for doc_id, row in rows.items() if row["state"] != "pending"]
            if len(finished) <= 2 * KEEP_FINISHED:
                continue
            moving = finished[: len(finished) - KEEP_FINISHED]
            frags = self.db.fragments(name)
            chunk = {doc_id: frags[doc_id] for doc_id in moving}
            try:
                await asyncio.to_thread(archive_finished, self.path, name, chunk, [rows[i] for i in moving])
            except OSError as exc:  # they stay in the live file; tried again later
                logger.error("cannot archive finished %s: %s", name, exc)
                continue
            self.db.drop_from_memory(name, moving)
            with contextlib.suppress(StoreError):  # reported in last_error; the next flush writes it
                await self.db.flush()


def _job(doc_id: int, row: dict[str, Any], entry: dict[str, Any]) -> Job:
    return Job(
        id=doc_id,
        key=row["key"],
        data=row,
        task_id=row.get("task_id"),
        delivery_id=row.get("delivery_id"),
        created=row.get("created", 0.0),
        attempts=entry["attempts"],
    )
