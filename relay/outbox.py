"""Alerts as jobs of the durable queue: one row per outcome, one entry per Apprise target, folded in bursts.

The queue (jobs.py) makes them survive restarts and retries them with backoff; this module decides which
deliveries alert, sends through Apprise, and keeps a target from getting more than `burst_limit` pushes per
`burst_window`: past that, what is due is folded into one digest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay import messages
from relay.alerts import AlertSender, Target
from relay.config import NotifySettings
from relay.covers import ArchivedLookup, Covers, make_fetcher
from relay.digest import digest
from relay.jobs import Attempt, Job, JobQueue, JobSpec, KindView
from relay.messages import Message
from relay.metrics import Metrics
from relay.model import Delivery

logger = logging.getLogger("relay.outbox")

KIND = "alerts"
#: What a job stores of its message (the job row is the message, so it survives restarts).
_FIELDS = ("category", "title", "markdown", "text", "type", "entry", "entry_markdown", "link", "image")


class AlertKind:
    """The `alerts` job kind: Apprise targets are its targets."""

    name = KIND
    done_state = "sent"

    def __init__(
        self, sender: AlertSender, settings: NotifySettings, metrics: Metrics, covers: Covers | None = None
    ) -> None:
        self.sender = sender
        #: Where cover pictures come from; the runtime points it at the archive once there is one.
        self.covers = covers or Covers(make_fetcher(settings.cover_allow_private))
        self.settings = settings
        self.metrics = metrics
        self.give_up_after = settings.give_up_after * 3600
        self.retry_base = settings.retry_base
        self.retry_max = settings.retry_max
        self.per_target = 1  # one push at a time per target keeps the burst accounting exact
        #: Told (target, reason) when a target fails an alert for good, so the other targets can say so.
        self.on_dead: Callable[[Target, str], None] | None = None
        self._sent_times: dict[str, deque[float]] = {}
        #: Where a delivery's files are saved (the archive sets it), so a success alert can say so.
        self.saved_to: Callable[[Delivery], str | None] = lambda delivery: None

    def spec(
        self,
        message: Message,
        key: str,
        task_id: str | None = None,
        delivery_id: int | None = None,
        targets: list[Target] | None = None,
    ) -> JobSpec:
        """The job for one message to the targets that want its category."""
        chosen = [t for t in (targets or self.sender.targets) if t.wants(message.category)]
        return JobSpec(
            key=key,
            targets=[(t.key, t.masked) for t in chosen],
            data={name: getattr(message, name) for name in _FIELDS},
            task_id=task_id,
            delivery_id=delivery_id,
        )

    def decide(self, delivery: Delivery) -> list[JobSpec]:
        """One alert per distinct outcome that `notify.events` (or a failure) calls for."""
        if not self.sender.targets or messages.category(delivery, self.settings.events) is None:
            return []
        message = messages.build(delivery, self.settings.link_base, saved_to=self.saved_to(delivery))
        return [self.spec(message, messages.outcome_key(delivery), delivery.get("task_id"), delivery["id"])]

    def plan(self, target: str, due: list[Job], now: float) -> tuple[list[list[Job]], float | None]:
        """Within the target's burst allowance send singly; past it fold the rest into one digest."""
        times = self._sent_times.setdefault(target, deque())
        while times and times[0] <= now - self.settings.burst_window:
            times.popleft()
        allowance = self.settings.burst_limit - len(times)
        if allowance <= 0:
            return [], times[0] + self.settings.burst_window
        if len(due) <= allowance:
            return [[job] for job in due], None
        return [*([job] for job in due[: allowance - 1]), due[allowance - 1 :]], None

    async def perform(self, target: str, jobs: list[Job]) -> list[Attempt]:
        """Push one alert, or a digest of several, to one target."""
        plugin = self.sender.by_key.get(target)
        if plugin is None:  # a target removed from the config since the alert was queued
            return [Attempt(False, "no longer configured", retry=False)] * len(jobs)
        rows = [_message(job.data) for job in jobs]
        message = rows[0] if len(rows) == 1 else digest(rows)
        image = None
        if message.image and self.settings.attach_covers and plugin.shows_pictures:
            image = await self.covers.image(message.image, jobs[0].task_id)
        result = await self.sender.send(plugin, message, image)
        self.metrics.alerts.labels(result="sent" if result.ok else "failed").inc()
        if not result.ok:
            logger.warning(
                "alert to %s failed (attempt %d): %s", plugin.masked, max(j.attempts for j in jobs) + 1, result.error
            )
            # The queue gives up on a job whose first attempt is older than give_up_after (jobs.py, _record).
            if self.on_dead is not None and any(time.time() - j.created >= self.give_up_after for j in jobs):
                self.on_dead(plugin, result.error or "failed")
            return [Attempt(False, result.error)] * len(jobs)
        # Only pushes that arrived use up the burst allowance: retries of a failing alert reached nobody,
        # and counting them would hold the alert back for a whole burst window.
        now = time.time()
        self._sent_times.setdefault(target, deque()).append(now)
        for job in jobs:
            self.metrics.alert_latency.observe(now - job.created)
        return [Attempt(True, state="digested" if len(jobs) > 1 else None)] * len(jobs)


def _message(row: dict[str, Any]) -> Message:
    """The message a job row holds (rows queued by an older relay lack the newer fields)."""
    known = {name: row[name] for name in _FIELDS if row.get(name) is not None}
    known.setdefault("type", {"success": "success", "failure": "failure"}.get(row["category"], "info"))
    return Message(**known)


def archived_cover(queue: JobQueue) -> ArchivedLookup:
    """A lookup of files other job kinds (the archive) finished: (task id, URL) -> the file, if it is there."""

    def lookup(task_id: str | None, url: str) -> Path | None:
        if not task_id:
            return None
        for kind in queue.kinds:
            if kind == KIND:
                continue
            for row in queue.for_task(kind, task_id):
                if url not in (row.get("url"), row.get("key")):
                    continue
                for entry in row.get("targets") or []:
                    path = entry.get("path")
                    if entry.get("state") not in ("pending", "dead", "failed") and path and Path(path).is_file():
                        return Path(path)
        return None

    return lookup


class Outbox(KindView):
    """The alert side of the queue, as the rest of relay uses it."""

    kind_name = KIND

    def __init__(self, queue: JobQueue, kind: AlertKind) -> None:
        super().__init__(queue)
        self.kind = kind
        self.sender = kind.sender
        kind.on_dead = self.target_dying

    def target_dying(self, target: Target, reason: str) -> None:
        """A target's alerts are being given up: warn the other targets, once a day per target."""
        others = [t for t in self.sender.targets if t.key != target.key]
        if not others:
            return
        hours = self.kind.settings.give_up_after
        text = (
            f"relay gave up alerts to {target.masked} after {hours:g} h of failures: {reason}. "
            "`relay notify-test` tries every target; `relay show TASK_ID` lists what was not delivered."
        )
        message = messages.warning(f"relay gave up alerts to {target.masked}", text)
        key = f"dead:{target.key}:{time.strftime('%Y-%m-%d', time.gmtime())}"
        self.queue.spawn(self.queue.enqueue(KIND, self.kind.spec(message, key, targets=others)))

    async def enqueue(self, message: Message, key: str, task_id: str | None = None) -> int | None:
        """Queue an alert that no delivery called for (URL changed, a lost task, …)."""
        return await self.queue.enqueue(KIND, self.kind.spec(message, key, task_id))

    def url_changed(self, old: str | None, new: str) -> None:
        """Tunnel callback: alert that tasks submitted with the old URL will not call back."""
        self.queue.spawn(self.enqueue(messages.url_changed(old, new), key=f"url:{new}:{time.time()}"))

