"""Forwards as the rest of relay uses them: per-task results, counts, and replay."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import Any

from relay import messages
from relay.errors import RelayError
from relay.forward.filters import matches
from relay.forward.kind import KIND, ForwardKind
from relay.jobs import JobQueue, KindView
from relay.metrics import Metrics
from relay.outbox import KIND as ALERTS
from relay.outbox import Outbox
from relay.store import read_all

#: The archive's job kind (issue #12); `after = "archived"` waits for its rows of a task to finish.
DOWNLOADS = "downloads"


class ReplayError(RelayError):
    """A replay that cannot be done as asked; `status` is the admin API's answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DownloadJobs:
    """The archive as the queue shows it: the `downloads` rows of a task (none while no archive kind runs)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def _rows(self, task_id: str) -> list[dict[str, Any]]:
        return self.queue.for_task(DOWNLOADS, task_id) if DOWNLOADS in self.queue.kinds else []

    def pending(self, task_id: str) -> bool:
        """Whether a download of the task is still pending (done and dead ones are finished)."""
        return any(row.get("state") == "pending" for row in self._rows(task_id))

    def files(self, task_id: str) -> list[str]:
        """Paths the download jobs recorded for the task's finished files."""
        paths = []
        for row in self._rows(task_id):
            for entry in row.get("targets", []):
                path = entry.get("path") or row.get("path")
                if entry.get("state") == "done" and isinstance(path, str) and path not in paths:
                    paths.append(path)
        return paths


class Forwards(KindView):
    """The forward side of the queue: what the admin API, the page and the health check ask of it."""

    kind_name = KIND

    def __init__(self, queue: JobQueue, kind: ForwardKind, outbox: Outbox, metrics: Metrics) -> None:
        super().__init__(queue)
        self.kind = kind
        self.outbox = outbox
        metrics.gauge("relay_forwards_pending", "Forwards waiting to be delivered", lambda: self.pending)
        metrics.gauge("relay_dead_forwards", "Forwards given up on", lambda: self.dead)


    async def replay(
        self, delivery_id: int | None = None, task_id: str | None = None, to: Iterable[str] = (), alerts: bool = False
    ) -> dict[str, Any]:
        """Queue a delivery (or a task's deliveries) again for the forward targets, and the alerts if asked.

        Without `to`, the targets whose filters match get it, as when it was recorded; `to` names targets that
        get it whatever their filters say. Each replay has a fresh `webhook-id` and is marked `relay-replay: 1`.
        """
        chosen = self._targets(list(to))
        deliveries = await self._deliveries(delivery_id, task_id)
        nonce = secrets.token_hex(6)
        out: dict[str, Any] = {"forwards": [], "alerts": [], "notes": []}
        for delivery in deliveries:
            targets = chosen or [t for t in self.kind.targets if matches(t, delivery)]
            if not targets:
                out["notes"].append(f"no forward target wants delivery {delivery['id']}")
                continue
            job = await self.queue.enqueue(KIND, self.kind.spec(delivery, targets, replay=nonce))
            out["forwards"].append({"delivery_id": delivery["id"], "job": job, "targets": [t.name for t in targets]})
        if alerts:
            await self._alerts(deliveries, nonce, out)
        return out

    def _targets(self, names: list[str]) -> list[Any]:
        unknown = [name for name in names if name not in self.kind.by_name]
        if unknown:
            known = ", ".join(self.kind.by_name) or "none"
            raise ReplayError(f"no forward target named {', '.join(unknown)} (configured: {known})")
        return [self.kind.by_name[name] for name in names]

    async def _deliveries(self, delivery_id: int | None, task_id: str | None) -> list[dict[str, Any]]:
        if (delivery_id is None) == (task_id is None):
            raise ReplayError("name one delivery id or one task id")
        if delivery_id is not None:
            one = await self.kind.find(delivery_id)
            if one is None:
                raise ReplayError(f"no delivery {delivery_id} in the log", status=404)
            return [one]
        docs = await asyncio.to_thread(read_all, self.kind.store.path)
        # A task's repeats of an earlier body were not forwarded the first time, and are not now.
        found = [d for d in docs if d.get("task_id") == task_id and not d.get("duplicate")]
        if not found:
            raise ReplayError(f"no deliveries for task {task_id!r}", status=404)
        return found

    async def _alerts(self, deliveries: list[dict[str, Any]], nonce: str, out: dict[str, Any]) -> None:
        if not self.outbox.sender.targets:
            out["notes"].append("no alert targets are configured")
            return
        seen: set[str] = set()
        for delivery in deliveries:
            if messages.category(delivery, self.outbox.kind.settings.events) is None:
                continue
            key = messages.outcome_key(delivery)
            if key in seen:  # one alert per outcome, as the first time
                continue
            seen.add(key)
            message = messages.build(delivery, self.outbox.kind.settings.link_base)
            spec = self.outbox.kind.spec(message, f"replay:{key}:{nonce}", delivery.get("task_id"), delivery["id"])
            job = await self.queue.enqueue(ALERTS, spec)
            out["alerts"].append({"delivery_id": delivery["id"], "job": job, "title": message.title})
        if not out["alerts"]:
            out["notes"].append("none of these deliveries alerts")
