"""The archive inside a running relay: what the admin app, `relay fetch` and /healthz ask of it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from relay.archive import naming
from relay.archive.downloads import KIND, DownloadKind
from relay.archive.files import file_href, files_view
from relay.archive.plan import plan
from relay.errors import RelayError
from relay.job_files import archived_for_task
from relay.jobs import JobQueue, JobSpec
from relay.model import Delivery
from relay.store import read_all


class ArchiveService:
    """Files of tasks, serving them, and fetching what is missing."""

    def __init__(self, root: Path, queue: JobQueue, kind: DownloadKind | None) -> None:
        self.root = root
        self.queue = queue
        self.kind = kind

    @property
    def enabled(self) -> bool:
        """Whether relay downloads files (archive.enabled)."""
        return self.kind is not None

    def files_for_task(self, task_id: str, delivery_ids: list[int]) -> list[dict[str, Any]]:
        """The task's files, archived rows and live ones."""
        if self.kind is None:
            return []
        rows = [*archived_for_task(self.queue.path, KIND, task_id, delivery_ids), *self.queue.for_task(KIND, task_id)]
        return files_view(rows, self.root)

    def local_copy(self, task_id: str | None, url: str) -> str | None:
        """relay's own path (`/files/<task>/<name>`) to the archived copy of `url`, or None (the page's players)."""
        if self.kind is None or not task_id:
            return None
        for row in self.queue.for_task(KIND, task_id):
            if row.get("url") == url and row.get("state") == "done":
                entry = (row.get("targets") or [{}])[0]
                if entry.get("state") == "done" and entry.get("path"):
                    return file_href(row["folder"], row["name"])
        return None

    def total_bytes(self) -> int | None:
        """The archive's size (None while it is off), for the page's health strip."""
        return self.kind.budget.total if self.kind is not None else None

    def local_file(self, folder: str, name: str) -> Path | None:
        """A finished file of the archive, or None (part files and anything outside archive.dir are never served)."""
        if name.startswith(".") or folder.startswith("."):
            return None
        try:
            path = naming.inside(self.root, folder, name)
        except naming.UnsafePath:
            return None
        return path if path.is_file() else None

    def saved_to(self, delivery: Delivery) -> str | None:
        """The folder a delivery's files are saved into, when it has files to save (for its alert)."""
        if self.kind is None:
            return None
        planned = [p for p in plan(delivery) if p.role != "meta"]
        return str(self.root / planned[0].folder) if planned else None

    def pending(self) -> int:
        """Downloads queued and not yet finished."""
        return self.queue.count(KIND, "pending") if self.kind is not None else 0

    def health(self) -> tuple[list[str], dict[str, Any]]:
        """Problems for /healthz, and the archive's part of its detail."""
        if self.kind is None:
            return [], {"enabled": False}
        problem = self.kind.budget.problem
        detail = {
            "enabled": True,
            "dir": str(self.root),
            "pending": self.pending(),
            "failed": self.queue.count(KIND, "dead"),
            "paused": problem,
            "total_bytes": self.kind.budget.total,
        }
        return ([f"archive: downloads {problem}"] if problem else []), detail

    async def fetch(self, task_id: str | None) -> dict[str, Any]:
        """Queue every file of the task (or of every task) that is neither on disk nor queued."""
        if self.kind is None:
            raise RelayError("the archive is off (archive.enabled = false)")
        deliveries = await asyncio.to_thread(read_all, self.queue.store.path)
        chosen = [d for d in deliveries if task_id is None or d.get("task_id") == task_id]
        pending = {
            (row.get("folder"), row.get("name"))
            for row in self.queue.db.table(KIND).values()
            if row["state"] == "pending"
        }
        counts = {"queued": 0, "present": 0, "pending": 0, "tasks": len({d.get("task_id") for d in chosen})}
        stamp = time.time()
        for delivery in chosen:
            for spec in self.kind.decide(delivery):  # type: ignore[arg-type]
                counts[await self._fetch_one(spec, pending, stamp)] += 1
        return counts

    async def _fetch_one(self, spec: JobSpec, pending: set[tuple[Any, Any]], stamp: float) -> str:
        where = (spec.data.get("folder"), spec.data.get("name"))
        if where in pending:
            return "pending"
        if (self.root / str(where[0]) / str(where[1])).exists():
            return "present"
        # A new key: the first job for this URL may have failed, and keys are queued once, ever.
        again = JobSpec(f"{spec.key}#fetch@{stamp}", spec.targets, spec.data, spec.task_id, spec.delivery_id)
        await self.queue.enqueue(KIND, again)
        pending.add(where)
        return "queued"
