"""Alerts that must survive restarts: recorded before they are sent, retried with backoff, folded in bursts.

Each alert is a row of the `alerts` table in `outbox.json` (a JournaledDB, so its changing rows are as
crash-safe as the log). A row has one entry per target; targets that succeeded are never sent to again.
The outbox fans out from recorded log entries: on start it catches up on every delivery after its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

from relay import messages
from relay.alerts import AlertSender, Target
from relay.config import NotifySettings
from relay.journal import JournaledDB
from relay.messages import Message
from relay.metrics import Metrics
from relay.store import DeliveryStore, now_iso, read_all

logger = logging.getLogger("relay.outbox")

KEEP_FINISHED_DAYS = 30


class Outbox:
    """The durable queue of alerts, and the worker that delivers them."""

    def __init__(
        self, path: Path, sender: AlertSender, settings: NotifySettings, metrics: Metrics, store: DeliveryStore
    ) -> None:
        self.path = path
        self.sender = sender
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.db = JournaledDB(path, ("alerts", "meta"))
        self._keys: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy: set[str] = set()  # targets with a send in flight
        self._sent_times: dict[str, deque[float]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._chain: asyncio.Future[Any] | None = None
        self._cursor_value = 0
        self._record_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox, catch up on deliveries recorded while relay was down, start delivering."""
        fresh = not self.path.exists()
        self.db.open()
        await self.db.start()
        if fresh:  # a new outbox does not alert on history recorded before it existed
            await self.db.put("meta", {"cursor": self.store.db.next_id("callbacks") - 1}, 1)
        cutoff = time.time() - KEEP_FINISHED_DAYS * 86400
        for doc_id, row in list(self.db.table("alerts").items()):
            if row["state"] != "pending" and row.get("finished", 0) < cutoff:
                await self.db.delete("alerts", doc_id)
            else:
                self._keys.add(row["key"])
        self._cursor_value = self._stored_cursor()
        newest = self.store.db.next_id("callbacks") - 1
        if self._cursor_value < newest:
            for doc in read_all(self.store.path, after=self._cursor_value):
                await self._consider(doc)
        await self._persist_cursor()
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        """Stop sending; sends in flight get a moment to finish, everything else stays pending on disk."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=min(self.settings.timeout, 10.0))
        if self._chain is not None:
            with contextlib.suppress(Exception):
                await self._chain
        await self._persist_cursor()
        await self.db.close()

    # -- intake --------------------------------------------------------------------------------------------

    def offer(self, doc: dict[str, Any]) -> None:
        """Listener for recorded deliveries: queue the decision without delaying the acknowledgement."""
        previous = self._chain
        if (previous is None or previous.done()) and self._alert_key(doc) is None:
            # Nothing queued before it and nothing to send: decided here, without a task per delivery.
            self._cursor_value = max(self._cursor_value, doc["id"])
            return
        self._chain = asyncio.ensure_future(self._after(previous, doc))

    async def _after(self, previous: asyncio.Future[Any] | None, doc: dict[str, Any]) -> None:
        if previous is not None:  # keep deliveries in order, so the cursor only moves forward
            with contextlib.suppress(Exception):
                await previous
        try:
            await self._consider(doc)
        except Exception:
            logger.exception("could not queue the alert for delivery %s", doc.get("id"))

    def _alert_key(self, doc: dict[str, Any]) -> str | None:
        """The outcome key of the alert `doc` calls for, or None when it calls for none (or it was sent)."""
        if not self.sender.targets or messages.category(doc, self.settings.events) is None:
            return None
        key = messages.outcome_key(doc)
        return None if key in self._keys else key

    async def _consider(self, doc: dict[str, Any]) -> None:
        key = self._alert_key(doc)
        if key is not None:
            self._keys.add(key)
            self._cursor_value = max(self._cursor_value, doc["id"])
            await self.enqueue(messages.build(doc), key=key, task_id=doc.get("task_id"), delivery_id=doc["id"])
            await self._persist_cursor()  # rides along with the alert; otherwise lazily, since keys dedupe
        self._cursor_value = max(self._cursor_value, doc["id"])

    async def enqueue(
        self,
        message: Message,
        key: str,
        task_id: str | None = None,
        delivery_id: int | None = None,
        targets: list[Target] | None = None,
    ) -> int:
        """Record an alert durably (before any send) and wake the worker."""
        chosen = [t for t in (targets or self.sender.targets) if t.wants(message.category)]
        row = {
            "key": key,
            "task_id": task_id,
            "delivery_id": delivery_id,
            "category": message.category,
            "title": message.title,
            "markdown": message.markdown,
            "text": message.text,
            "created_at": now_iso(),
            "created": time.time(),
            "state": "pending" if chosen else "sent",
            "targets": [
                {
                    "key": t.key,
                    "target": t.masked,
                    "state": "pending",
                    "attempts": 0,
                    "next_at": 0.0,
                    "error": None,
                }
                for t in chosen
            ],
        }
        doc_id = await self.db.put("alerts", row)
        self._wake.set()
        return doc_id

    def url_changed(self, old: str | None, new: str) -> None:
        """Tunnel callback: alert that tasks submitted with the old URL will not call back."""
        task = asyncio.ensure_future(self.enqueue(messages.url_changed(old, new), key=f"url:{new}:{time.time()}"))
        self._inflight.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._inflight.discard)

    def _stored_cursor(self) -> int:
        meta = self.db.table("meta").get(1, {})
        return int(meta.get("cursor", 0))

    async def _persist_cursor(self) -> None:
        """The last delivery considered. Lagging is harmless: a re-considered outcome's key is known."""
        if self._cursor_value != self._stored_cursor():
            await self.db.put("meta", {"cursor": self._cursor_value}, 1)

    # -- reporting -----------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alerts not yet delivered to every target."""
        return sum(1 for row in self.db.table("alerts").values() if row["state"] == "pending")

    @property
    def dead(self) -> int:
        """Alerts some target gave up on."""
        return sum(1 for row in self.db.table("alerts").values() if row["state"] == "dead")

    @property
    def recent_dead(self) -> int:
        """Alerts given up on in the last 24 hours (these make /healthz unhealthy)."""
        since = time.time() - 86400
        return sum(1 for r in self.db.table("alerts").values() if r["state"] == "dead" and r.get("finished", 0) > since)

    def for_task(self, task_id: str) -> list[dict[str, Any]]:
        """The alerts of one task, for `relay show` and the web page."""
        return [row for row in self.db.table("alerts").values() if row.get("task_id") == task_id]

    # -- delivery ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            next_due = self._dispatch()
            self._wake.clear()
            delay = None if next_due is None else max(0.05, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _dispatch(self) -> float | None:
        """Start what is due, per target; return when something next becomes due."""
        now = time.time()
        due: dict[str, list[int]] = {}
        next_due: float | None = None
        for doc_id, row in self.db.table("alerts").items():
            if row["state"] != "pending":
                continue
            for entry in row["targets"]:
                if entry["state"] != "pending":
                    continue
                if entry["next_at"] <= now:
                    due.setdefault(entry["key"], []).append(doc_id)
                else:
                    next_due = min(next_due or entry["next_at"], entry["next_at"])
        for key, ids in due.items():
            target = self.sender.by_key.get(key)
            if target is None or key in self._busy:
                continue
            allowance, free_at = self._allowance(key, now)
            if allowance <= 0:
                next_due = min(next_due or free_at, free_at)
                continue
            batch = ids[:allowance] if len(ids) <= allowance else ids[: allowance - 1]
            fold = [] if len(ids) <= allowance else ids[allowance - 1 :]
            self._busy.add(key)
            task = asyncio.create_task(self._deliver(target, batch, fold))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return next_due

    def _allowance(self, key: str, now: float) -> tuple[int, float]:
        times = self._sent_times.setdefault(key, deque())
        while times and times[0] <= now - self.settings.burst_window:
            times.popleft()
        free_at = times[0] + self.settings.burst_window if times else now
        return self.settings.burst_limit - len(times), free_at

    async def _deliver(self, target: Target, batch: list[int], fold: list[int]) -> None:
        try:
            for doc_id in batch:
                row = self.db.table("alerts")[doc_id]
                message = Message(row["category"], row["title"], row["markdown"], row["text"])
                await self._send_one(target, [doc_id], message)
            if fold:
                rows = [self.db.table("alerts")[i] for i in fold]
                folded = messages.digest([Message(r["category"], r["title"], r["markdown"], r["text"]) for r in rows])
                await self._send_one(target, fold, folded)
        finally:
            self._busy.discard(target.key)
            self._wake.set()

    async def _send_one(self, target: Target, doc_ids: list[int], message: Message) -> None:
        async with self._semaphore:
            result = await self.sender.send(target, message)
        if result.ok:
            # Only pushes that arrived use up the burst allowance: retries of a failing alert reached
            # nobody, and counting them would hold the alert back for a whole burst window.
            self._sent_times.setdefault(target.key, deque()).append(time.time())
        self.metrics.alerts.labels(result="sent" if result.ok else "failed").inc()
        for doc_id in doc_ids:
            await self._record(doc_id, target.key, result.ok, result.error, digest=len(doc_ids) > 1)
        if not result.ok:
            logger.warning("alert to %s failed: %s", target.masked, result.error)

    async def _record(self, doc_id: int, key: str, ok: bool, error: str | None, digest: bool) -> None:
        # Targets of one row finish concurrently: serialize read-modify-write, or one result would be lost.
        async with self._record_lock:
            await self._record_locked(doc_id, key, ok, error, digest)

    async def _record_locked(self, doc_id: int, key: str, ok: bool, error: str | None, digest: bool) -> None:
        row = self.db.table("alerts")[doc_id]
        now = time.time()
        targets = []
        for entry in row["targets"]:
            if entry["key"] == key:
                entry = {**entry, "attempts": entry["attempts"] + 1, "error": error, "at": now_iso()}
                if ok:
                    entry["state"] = "digested" if digest else "sent"
                elif now - row["created"] >= self.settings.give_up_after * 3600:
                    entry["state"] = "dead"
                else:
                    entry["next_at"] = now + self._backoff(entry["attempts"])
            targets.append(entry)
        states = {t["state"] for t in targets}
        state = "pending" if "pending" in states else ("dead" if "dead" in states else "sent")
        updated = {**row, "targets": targets, "state": state}
        if state != "pending":
            updated["finished"] = now
            if ok:
                self.metrics.alert_latency.observe(now - row["created"])
        await self.db.put("alerts", updated, doc_id)

    def _backoff(self, attempts: int) -> float:
        """Exponential with full jitter (so targets that failed together do not retry together)."""
        ceiling = min(self.settings.retry_max, self.settings.retry_base * 2 ** (attempts - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
