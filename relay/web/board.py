"""Assembling what a page shows: reads on the read threads (web/runner.py), then the pure builders (cards, strip,
chart)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup

from relay.render import mask_targets
from relay.web import chart, health, reads
from relay.web.cards import TaskCard, build_card, explain_failure
from relay.web.links import curl_command
from relay.web.listing import Page, PageQuery, collect, matches
from relay.web.services import AdminServices

ALERTS = "alerts"


@dataclass(frozen=True)
class DeliveryView:
    """One delivery on the task page: its facts, the raw payload pretty-printed, and the replay command."""

    doc: Mapping[str, Any]
    failure: str | None
    payload: str
    curl: str


def pretty(payload: Any) -> str:
    """The payload as indented JSON; escaped to ASCII only when it holds text UTF-8 cannot carry (lone surrogates)."""
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, indent=2)
    return text


class Board:
    """The admin pages' data: cards, a task's deliveries, the health strip and the chart."""

    def __init__(self, services: AdminServices) -> None:
        self.services = services
        self.tally = chart.DailyTally()
        self._seeding = asyncio.Lock()
        services.events.delivery_listeners.append(self.tally.add)

    def card(self, docs: Sequence[Mapping[str, Any]], alerts: Sequence[Mapping[str, Any]]) -> TaskCard:
        """A card, with the archive's local copies and the watch state when those exist."""
        task_id = docs[-1].get("task_id")
        watch = self.services.watch_state(task_id) if isinstance(task_id, str) else None
        return build_card(docs, alerts, self.services.local_copy, watch)

    async def _alerts(self, tasks: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        wanted = {
            str(docs[-1]["task_id"]): [int(d["id"]) for d in docs]
            for docs in tasks
            if isinstance(docs[-1].get("task_id"), str)
        }
        outbox = self.services.outbox_path
        found = await self.services.reads.run(lambda check: reads.jobs_by_task(outbox, ALERTS, wanted))
        return {task: mask_targets(rows) for task, rows in found.items()}

    def _cards(self, tasks: Sequence[Sequence[Mapping[str, Any]]], alerts: Mapping[str, Any]) -> list[TaskCard]:
        return [self.card(docs, alerts.get(str(docs[-1].get("task_id")), [])) for docs in tasks]

    async def page(self, query: PageQuery) -> tuple[Page, list[TaskCard]]:
        """One page of the index."""
        now = datetime.now(UTC)
        log, held = self.services.log_path, self.services.snapshot("callbacks")
        page = await self.services.reads.run(
            lambda check: collect(reads.newest_first(log, "callbacks", held, check), query, now)
        )
        return page, self._cards(page.tasks, await self._alerts(page.tasks))

    async def deliveries(
        self, task_id: str | None, delivery_id: int | None, complete: bool = False
    ) -> list[dict[str, Any]]:
        """A task's deliveries (oldest first), or the one delivery that has no task (see reads.task_deliveries)."""
        log, held = self.services.log_path, self.services.snapshot("callbacks")
        if task_id is not None:
            return await self.services.reads.run(
                lambda check: reads.task_deliveries(log, task_id, complete, held, check)
            )
        if delivery_id is not None:
            doc = await self.services.reads.run(lambda check: reads.one_delivery(log, delivery_id, held))
            return [doc] if doc is not None and doc.get("task_id") is None else []
        return []

    async def one_card(self, docs: list[dict[str, Any]], query: PageQuery | None = None) -> TaskCard | None:
        """The card of these deliveries, or None when `query` filters it out."""
        if not docs or (query is not None and not matches(docs, query)):
            return None
        return self._cards([docs], await self._alerts([docs]))[0]

    async def task_alerts(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The alert rows of one task (none for a delivery without a task id)."""
        return (await self._alerts([docs])).get(str(docs[-1].get("task_id")), [])

    async def task_forwards(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The forward jobs of one task (none without forward targets or a task id)."""
        forwards, task_id = self.services.forwards, docs[-1].get("task_id")
        if forwards is None or not isinstance(task_id, str):
            return []
        ids = [int(d["id"]) for d in docs]
        return await self.services.reads.run(lambda check: forwards.for_task(task_id, ids))

    async def task(self, docs: list[dict[str, Any]]) -> tuple[TaskCard, list[dict[str, Any]], list[DeliveryView]]:
        """The task page: the card, the alert rows in full, and each delivery with payload and replay command."""
        alerts = await self.task_alerts(docs)
        local = self.services.local_callback_url()
        views = [
            DeliveryView(
                doc=doc,
                failure=explain_failure(doc) if doc.get("ok") is False else None,
                payload=pretty(doc.get("payload")),
                curl=curl_command(local, doc.get("payload")),
            )
            for doc in docs
        ]
        return self.card(docs, alerts), alerts, views

    def strip(self) -> list[health.Item]:
        """The health strip, from the running relay's state (cheap: no file is read)."""
        _, detail = self.services.health()
        try:
            usage = shutil.disk_usage(self.services.log_path.parent)
            disk: tuple[int, int] | None = (usage.free, usage.total)
        except OSError:
            disk = None
        return health.strip(
            detail,
            self.services.callback_url(),
            disk,
            self.services.watched_waiting(),
            self.services.archive_bytes(),
        )

    async def chart(self) -> Markup:
        """The chart of the last days; the first call reads the log, later ones count what arrives."""
        today = datetime.now(UTC).date()
        async with self._seeding:
            if not self.tally.seeded:
                since = today - timedelta(days=chart.DAYS - 1)
                log, held = self.services.log_path, self.services.snapshot("callbacks")
                self.tally.begin()
                counts, through = await self.services.reads.run(
                    lambda check: (
                        reads.daily_outcomes(log, since, held, check)
                        or chart.tally(reads.newest_first(log, "callbacks", held, check), since)
                    )
                )
                self.tally.install(counts, through)
        return chart.svg(self.tally.series(today))
