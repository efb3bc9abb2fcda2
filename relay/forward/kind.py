"""The `forwards` job kind: one job per recorded delivery, one entry per forward target it matches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client import Counter

from relay.config import ForwardTarget, NotifySettings
from relay.forward import command, http
from relay.forward.filters import message_id, wanted
from relay.jobs import Attempt, Job, JobSpec, plan_each
from relay.jsonfiles import read_tinydb
from relay.metrics import Metrics
from relay.model import Delivery
from relay.store import DeliveryStore, archives

logger = logging.getLogger("relay.forward")

KIND = "forwards"
#: How often a target with `after = "archived"` looks again at a task whose files are still downloading.
ARCHIVE_POLL = 1.0


class ArchiveView(Protocol):
    """What `after = "archived"` and exec targets need from the archive."""

    def pending(self, task_id: str) -> bool:
        """Whether some of the task's files are still being downloaded."""

    def files(self, task_id: str) -> list[str]:
        """Absolute paths of the task's files on disk."""


class NoArchive:
    """Without an archive nothing is pending and there are no files: `after = "archived"` runs at once."""

    def pending(self, task_id: str) -> bool:
        """Never pending."""
        return False

    def files(self, task_id: str) -> list[str]:
        """No files."""
        return []


class ForwardKind:
    """Forward targets are its targets; retries follow the alerts' schedule (`notify.retry_*`)."""

    name = KIND
    done_state = "sent"
    per_target = 1  # one at a time per target: a task's stages arrive in order unless a retry intervenes

    def __init__(
        self, targets: tuple[ForwardTarget, ...], store: DeliveryStore, schedule: NotifySettings, metrics: Metrics
    ) -> None:
        self.targets = targets
        self.by_name = {target.name: target for target in targets}
        self.store = store
        self.give_up_after = schedule.give_up_after * 3600
        self.retry_base = schedule.retry_base
        self.retry_max = schedule.retry_max
        #: Replaced by the runtime when an archive kind exists (see runtime.Relay).
        self.archive: ArchiveView = NoArchive()
        self.attempts = Counter(
            "relay_forwards", "Forward attempts by target and result", ["target", "result"], registry=metrics.registry
        )
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ForwardKind:
        # No proxy from the environment (targets are on the LAN) and no redirects (a redirect is not a delivery).
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def spec(self, delivery: Mapping[str, Any], targets: list[ForwardTarget], replay: str | None = None) -> JobSpec:
        """The job sending one delivery to `targets`; a replay has its own key and a fresh `webhook-id`."""
        key = f"replay:{delivery['id']}:{replay}" if replay else f"forward:{delivery['id']}:{delivery['fingerprint']}"
        return JobSpec(
            key=key,
            targets=[(target.name, target.name) for target in targets],
            data={"webhook_id": message_id(delivery, replay), "replay": bool(replay)},
            task_id=delivery.get("task_id"),
            delivery_id=delivery["id"],
        )

    def decide(self, delivery: Delivery) -> list[JobSpec]:
        """One job per delivery that some target's filters let through."""
        chosen = wanted(self.targets, delivery)
        return [self.spec(delivery, chosen)] if chosen else []

    def plan(self, target: str, due: list[Job], now: float) -> tuple[list[list[Job]], float | None]:
        """Each job on its own; with `after = "archived"`, jobs of tasks still downloading wait."""
        config = self.by_name.get(target)
        if config is None or config.after != "archived":
            return plan_each(due, self.per_target)
        ready = [job for job in due if not (job.task_id and self.archive.pending(job.task_id))]
        groups, _ = plan_each(ready, self.per_target)
        return groups, (now + ARCHIVE_POLL if len(ready) < len(due) else None)

    async def perform(self, target: str, jobs: list[Job]) -> list[Attempt]:
        """Send each job's delivery to one target."""
        return [await self._one(target, job) for job in jobs]

    async def _one(self, target: str, job: Job) -> Attempt:
        config = self.by_name.get(target)
        if config is None:  # removed from the config since the job was queued
            return Attempt(False, "no longer configured", retry=False)
        delivery = await self.find(job.delivery_id)
        if delivery is None:
            return Attempt(False, f"delivery {job.delivery_id} is no longer in the log", retry=False)
        replay = bool(job.data.get("replay"))
        if config.url:
            assert self._client is not None, "ForwardKind used outside its context"
            result = await http.post(self._client, config, delivery, job.data["webhook_id"], replay)
        else:
            files = self.archive.files(job.task_id) if job.task_id else []
            result = await command.run(config, delivery, files, replay)
        self.attempts.labels(target=target, result="ok" if result.ok else "failed").inc()
        if not result.ok:
            logger.warning("forward of delivery %s to %s failed: %s", job.delivery_id, target, result.error)
        return result

    async def find(self, delivery_id: int | None) -> dict[str, Any] | None:
        """A delivery by id: from memory while it is in the live log, else from the archive file holding it."""
        if delivery_id is None:
            return None
        live = self.store.db.table("callbacks").get(delivery_id)
        if live is not None:
            return live
        return await asyncio.to_thread(find_archived, self.store.path, delivery_id)


def find_archived(path: Path, delivery_id: int) -> dict[str, Any] | None:
    """A delivery from the one archive file whose id range holds it."""
    for _, first, last, archive in archives(path, "callbacks"):
        if first <= delivery_id <= last:
            return read_tinydb(archive).get("callbacks", {}).get(delivery_id)
    return None
