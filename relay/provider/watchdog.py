"""The watchdog: polls watched tasks whose final callback does not come, so no result is missed.

A watched task is left alone for `poll_after` seconds (the provider's own callback retries span ~21 minutes),
then polled every `poll_interval` until it ends. What a poll finds is recorded in the log like a callback
(`source: "poll"`), so alerts, the archive and forwards treat it as one; only answers that move the task forward
are recorded, so a task polled for an hour adds a handful of deliveries, not a hundred. After a restart, a tunnel
outage or a new public URL, the tasks in flight are polled at once: their callbacks may have gone nowhere.
Past `give_up_after` a task is `lost`, with one alert. 401 and 429 stop all polling, with one alert saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relay.config import ProviderSettings
from relay.errors import StoreError
from relay.messages import Message
from relay.model import Delivery
from relay.payloads import advance
from relay.provider import answers, notices
from relay.provider.client import (
    ProviderClient,
    ProviderError,
    ProviderRefused,
    ProviderStopped,
    ProviderUnavailable,
    backoff,
)
from relay.provider.operations import POLLABLE
from relay.provider.watchlist import ACTIVE, ENDED_BY, Row, WatchList
from relay.store import DeliveryStore, now_iso

logger = logging.getLogger("relay.watchdog")

#: Queues an alert: (message, dedupe key, task id). The outbox's `enqueue`.
Alert = Callable[[Message, str, str | None], Awaitable[object]]
#: Answers saying the provider has no such task before relay stops asking (a fresh task may lag a moment).
UNKNOWN_LIMIT = 3
#: Polls in flight at once; the client's rate limit spaces them anyway.
CONCURRENCY = 4
#: Longest wait between attempts while the provider is failing.
MAX_BACKOFF = 600.0


class Watchdog:
    """Watches tasks, polls them when due, records what it finds and alerts what was lost."""

    def __init__(
        self,
        settings: ProviderSettings,
        watchlist: WatchList,
        store: DeliveryStore,
        alert: Alert,
        client: ProviderClient | None = None,
        link_base: str = "",
    ) -> None:
        self.settings = settings
        self.link_base = link_base  # notify.link_base: alerts link to the task's page
        self.watchlist = watchlist
        self.store = store
        self.alert = alert
        self.client = client or ProviderClient(
            settings.base_url,
            settings.api_key.get_secret_value(),
            rate_limit=settings.rate_limit,
            timeout=settings.timeout,
        )
        self.stopped: str | None = None  # why polling stopped (401/429), until a manual poll works or a restart
        self._due_now: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._run_id = now_iso()

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def __aenter__(self) -> Watchdog:
        for row in self.watchlist.active():  # ended while relay was writing its row when it stopped
            ended = ENDED_BY.get(self.store.task_state(row["task_id"]) or "")
            if ended:
                await self.watchlist.update(row["task_id"], state=ended)
        self.store.subscribe(self.on_delivery)
        self.kick("relay started")  # while it was down, callbacks went nowhere
        self._task = asyncio.create_task(self._run(), name="watchdog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.store.unsubscribe(self.on_delivery)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
        await self.client.aclose()

    def kick(self, reason: str) -> None:
        """Poll every task in flight now (the tunnel was down or its URL changed: callbacks may be lost)."""
        active = [row["task_id"] for row in self.watchlist.active()]
        if active:
            logger.info("%s: polling %d watched task(s) now", reason, len(active))
        self._due_now.update(active)
        self._wake.set()

    def url_changed(self, old: str | None, new: str) -> None:
        """Tunnel listener: tasks submitted with the old URL will never call back."""
        self.kick("the public URL changed")

    def tunnel_restored(self) -> None:
        """Tunnel listener: callbacks sent while it was down went nowhere."""
        self.kick("the tunnel is back up")

    # -- what the CLI asks for (through the admin API) -----------------------------------------------------

    async def watch(self, task_id: str, kind: str, source: str = "watch", operation: str | None = None) -> Row:
        """Watch a task; a task already finished in the log is recorded as ended at once."""
        if kind not in POLLABLE:
            raise ValueError(f"kind {kind!r} cannot be polled: use one of {', '.join(POLLABLE)}")
        row = self.watchlist.get(task_id)
        if row is not None and row["state"] != "lost":
            if row["state"] in ACTIVE and row["kind"] != kind:
                row = await self.watchlist.update(task_id, kind=kind)
            return row
        ended = ENDED_BY.get(self.store.task_state(task_id) or "")
        first_poll = time.time() + self.settings.poll_after
        row = await self.watchlist.add(task_id, kind, first_poll, source, operation, state=ended or "waiting")
        logger.info("watching task %s (%s, from %s)", task_id, kind, source)
        self._wake.set()
        return row

    async def poll_now(self, task_id: str, kind: str | None = None) -> dict[str, Any]:
        """Poll one task now and record whatever the provider says (raises ProviderError when it cannot)."""
        row = self.watchlist.get(task_id)
        kind = kind or (row["kind"] if row else "music")
        if kind not in POLLABLE:
            raise ValueError(f"kind {kind!r} cannot be polled: use one of {', '.join(POLLABLE)}")
        answer = await self.client.record_info(kind, task_id, retries=2)
        if self.stopped is not None:
            logger.info("a poll works again: polling resumes")
            self.stopped = None
            self._wake.set()
        read = answers.read(kind, task_id, answer)
        delivery = await self.store.record(answers.poll_doc(read, answer, now_iso()))
        if row is not None:
            await self._polled(row, read)
        return {"task_id": task_id, "kind": kind, "status": read.status, "phase": read.phase, "delivery": delivery}

    # -- the loop ------------------------------------------------------------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        """Store subscriber: a delivery that ends a watched task ends its watch, whichever way it came."""
        task_id = delivery.get("task_id")
        row = self.watchlist.get(task_id) if task_id else None
        ended = ENDED_BY.get(delivery.get("task_state") or "")
        if task_id and row is not None and ended and row["state"] != ended:
            self._spawn(self.watchlist.update(task_id, state=ended))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                next_at = await self._round()
            except Exception:  # a bug must not end the watchdog: the next round tries again
                logger.exception("watchdog round failed")
                next_at = time.time() + self.settings.poll_interval
            delay = 60.0 if next_at is None else min(60.0, max(0.0, next_at - time.time()))
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can swallow a cancel (see jobs.py)
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _round(self) -> float | None:
        """Give up on overdue tasks, poll the due ones; returns when the next one is due."""
        now = time.time()
        due: list[Row] = []
        next_at: float | None = None
        for row in self.watchlist.active():
            deadline = row["watched"] + self.settings.give_up_after
            if now >= deadline:
                await self._lose(row, f"no result after {notices.duration(self.settings.give_up_after)}")
                continue
            at = now if row["task_id"] in self._due_now else row["next_poll"]
            if self.stopped is None and at <= now:
                due.append(row)
                continue
            at = deadline if self.stopped is not None else min(at, deadline)
            next_at = at if next_at is None else min(next_at, at)
        if due:
            await asyncio.gather(*(self._poll_watched(row) for row in due))
            return time.time()  # look again at once: polling took a while
        return next_at

    async def _poll_watched(self, row: Row) -> None:
        task_id, kind = row["task_id"], row["kind"]
        async with self._limit:
            self._due_now.discard(task_id)
            if self.stopped is not None:
                return
            try:
                answer = await self.client.record_info(kind, task_id)
            except ProviderStopped as exc:
                await self._stop(exc)
            except ProviderUnavailable as exc:
                await self._failed(row, exc)
            except ProviderRefused as exc:
                await self._unknown(row, str(exc))
            else:
                read = answers.read(kind, task_id, answer)
                if read.phase == "unknown":
                    await self._unknown(row, read.note)
                    return
                if self._moves_forward(read):
                    try:
                        delivery = await self.store.record(answers.poll_doc(read, answer, now_iso()))
                    except (StoreError, ValueError) as exc:
                        logger.error("cannot record the poll of task %s, will poll again: %s", task_id, exc)
                        await self._failed(row, exc)
                        return
                    logger.info("poll of task %s recorded as delivery %s: %s", task_id, delivery["id"], read.note)
                else:
                    logger.debug("poll of task %s: %s", task_id, read.note)
                await self._polled(row, read)

    def _moves_forward(self, read: answers.PollAnswer) -> bool:
        """Whether the answer says more than the log already holds for its task (else it is not recorded)."""
        current = self.store.task_state(read.fields["task_id"])
        return advance(current, read.fields["stage"], read.fields["ok"]) != current

    async def _polled(self, row: Row, read: answers.PollAnswer) -> None:
        now = time.time()
        await self.watchlist.update(
            row["task_id"],
            state={"done": "done", "failed": "failed"}.get(read.phase, "polling"),
            next_poll=now + self.settings.poll_interval,
            polls=row.get("polls", 0) + 1,
            last_poll_at=now_iso(),
            last_status=read.status or None,
            last_error=None,
            errors=0,
            unknown=0,
        )

    async def _failed(self, row: Row, exc: Exception) -> None:
        """A poll that did not work: try again later, backing off while the provider keeps failing."""
        errors = row.get("errors", 0) + 1
        interval = self.settings.poll_interval
        delay = max(interval, backoff(errors, base=interval, cap=max(interval, MAX_BACKOFF)))
        logger.warning("poll of task %s failed (%s); trying again in %.0f s", row["task_id"], exc, delay)
        await self.watchlist.update(
            row["task_id"],
            state="polling",
            next_poll=time.time() + delay,
            polls=row.get("polls", 0) + 1,
            last_poll_at=now_iso(),
            last_error=str(exc),
            errors=errors,
        )

    async def _unknown(self, row: Row, said: str) -> None:
        strikes = row.get("unknown", 0) + 1
        if strikes >= UNKNOWN_LIMIT:
            message = notices.unknown(*_ids(row), said, self.link_base)
            await self._lose(row, f"the provider does not know the task ({said})", message)
            return
        logger.warning("the provider does not know task %s (%s): asking again later", row["task_id"], said)
        await self.watchlist.update(
            row["task_id"],
            state="polling",
            next_poll=time.time() + self.settings.poll_interval,
            polls=row.get("polls", 0) + 1,
            last_poll_at=now_iso(),
            last_error=said,
            unknown=strikes,
        )

    async def _lose(self, row: Row, reason: str, message: Message | None = None) -> None:
        """The task is `lost`: one alert (queued first, so a crash can repeat it but never skip it)."""
        task_id, kind = _ids(row)
        message = message or notices.lost(
            task_id, kind, self.settings.give_up_after, row.get("last_status"), self.link_base
        )
        logger.warning("task %s is lost: %s", task_id, reason)
        try:
            await self.alert(message, f"lost:{task_id}:{row['watched']}", task_id)
        except StoreError as exc:
            logger.error("cannot queue the alert for lost task %s, will try again: %s", task_id, exc)
            return
        await self.watchlist.update(task_id, state="lost", reason=reason)

    async def _stop(self, exc: ProviderError) -> None:
        if self.stopped is not None:
            return
        self.stopped = str(exc)
        logger.error("polling stopped: %s", exc)
        try:
            await self.alert(notices.stopped(str(exc)), f"provider-stopped:{exc.code}:{self._run_id}", None)
        except StoreError as err:
            logger.error("cannot queue the alert saying polling stopped: %s", err)


def _ids(row: Row) -> tuple[str, str]:
    return row["task_id"], row["kind"]


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("updating a watched task failed: %s", task.exception())
