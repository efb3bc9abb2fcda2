"""The tasks relay watches: one row per task in `<state_dir>/watch.json`, crash-safe like the log.

A JournaledDB (journal fsynced before a change counts, the TinyDB file rewritten atomically), so the list and each
task's schedule survive kill -9. Only the running relay writes it; the CLI reads it through the admin API (or
`read_rows` when relay is not running).

A row: `task_id`, `kind`, `state` (`waiting` until `poll_after`, `polling`, then `done`, `failed` or `lost`),
`watched_at` (ISO) and `watched` (epoch seconds), `next_poll` (epoch seconds), `polls`, `last_poll_at`,
`last_status` (the provider's), `last_error`, `reason` (why it ended, when not by a result), `source`
(`submit`, `watch` or `poll`) and `operation`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.journal import JournaledDB
from relay.jsonfiles import read_table
from relay.store import now_iso

logger = logging.getLogger("relay.watch")

TABLE = "tasks"
STATES = ("waiting", "polling", "done", "failed", "lost")
ACTIVE = ("waiting", "polling")
#: A task's state in the log (payloads.advance) -> the watched state it ends the watch with.
ENDED_BY = {"complete": "done", "failed": "failed"}

Row = dict[str, Any]


class WatchList:
    """The durable list of watched tasks, held in memory and journaled on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = JournaledDB(path, (TABLE,))
        self._ids: dict[str, int] = {}
        self._lock = asyncio.Lock()  # updates read-modify-write a row; the watchdog and deliveries race
        #: Called on the loop with a row whenever a task is watched or its state changes (the page's events).
        self.listeners: list[Callable[[Row], None]] = []

    async def __aenter__(self) -> WatchList:
        self.db.open()
        await self.db.start()
        self._ids = {row["task_id"]: doc_id for doc_id, row in self.db.table(TABLE).items()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    def get(self, task_id: str) -> Row | None:
        """The row of `task_id`, or None when it is not watched."""
        doc_id = self._ids.get(task_id)
        return self.db.table(TABLE).get(doc_id) if doc_id is not None else None

    def rows(self) -> list[Row]:
        """Every watched task, oldest first."""
        return list(self.db.table(TABLE).values())

    def active(self) -> list[Row]:
        """The tasks still in flight (waiting or polling)."""
        return [row for row in self.db.table(TABLE).values() if row["state"] in ACTIVE]

    async def add(
        self,
        task_id: str,
        kind: str,
        first_poll: float,
        source: str,
        operation: str | None = None,
        state: str = "waiting",
    ) -> Row:
        """Watch `task_id`, first polled at `first_poll` (epoch seconds); durable when this returns."""
        now = time.time()
        row: Row = {
            "task_id": task_id,
            "kind": kind,
            "state": state,
            "watched_at": now_iso(),
            "watched": now,
            "next_poll": first_poll,
            "polls": 0,
            "last_poll_at": None,
            "last_status": None,
            "last_error": None,
            "reason": None,
            "source": source,
            "operation": operation,
        }
        if state not in ACTIVE:
            row["ended_at"] = row["watched_at"]
        async with self._lock:
            self._ids[task_id] = await self.db.put(TABLE, row, self._ids.get(task_id))
        self._tell(row)
        return row

    async def update(self, task_id: str, **changes: Any) -> Row:
        """Change fields of a watched task's row; durable when this returns.

        A task that ended stays ended: a poll finishing after its callback cannot set it back to `polling`.
        A late result is news, as in the log (payloads.advance): `lost` may still become `done` or `failed`,
        and `failed` may become `done` (the provider produced the tracks after all).
        """
        async with self._lock:
            doc_id = self._ids[task_id]
            row = self.db.table(TABLE)[doc_id]
            new, old = changes.get("state"), row["state"]
            reopens = old not in ACTIVE and new not in (None, old)
            later_news = (old == "lost" and new in ENDED_BY.values()) or (old, new) == ("failed", "done")
            if reopens and not later_news:
                changes = {k: v for k, v in changes.items() if k not in ("state", "next_poll", "reason")}
            if changes.get("state") not in (None, *ACTIVE, row["state"]):
                changes["ended_at"] = now_iso()
            updated = {**row, **changes}
            await self.db.put(TABLE, updated, doc_id)
        if updated["state"] != row["state"]:
            self._tell(updated)
        return updated

    def _tell(self, row: Row) -> None:
        for listener in list(self.listeners):
            try:
                listener(row)
            except Exception:  # a listener's bug must not fail the watch itself
                logger.exception("watch listener failed for %s", row.get("task_id"))


def read_rows(path: Path) -> list[Row]:
    """The watched tasks as the file (and its journal) hold them, for readers other than the running relay."""
    return list(read_table(path, TABLE).values())
