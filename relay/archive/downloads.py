"""The `downloads` job kind: each file a recorded delivery links to, fetched into archive.dir by the job queue.

The queue (jobs.py) makes downloads durable, deduped by URL and retried with backoff across restarts; this module
decides what to fetch (plan.py) and makes one attempt. Transfers run in `archive.concurrency` worker processes at
a lower priority (worker.py), so they never take the event loop's GIL or the threads the log's commits use, and
never hold up an acknowledgement. Lyrics and meta.json are small and written from a thread of this process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from relay.archive import metafile, naming, worker
from relay.archive.budget import Budget, NoRoom
from relay.archive.plan import plan
from relay.archive.safefetch import FetchError, Refused, Timeouts
from relay.config import ArchiveSettings
from relay.jobs import Attempt, Job, JobSpec, plan_each
from relay.metrics import Metrics
from relay.model import Delivery

logger = logging.getLogger("relay.archive")

KIND = "downloads"
LANE = ("archive", "archive")
ROOM_CHECK = 2.0  # seconds between looks at the disk while the budget holds downloads back


class DownloadKind:
    """The `downloads` job kind: one lane, `archive`, with `archive.concurrency` attempts at once."""

    name = KIND
    done_state = "done"

    def __init__(
        self,
        settings: ArchiveSettings,
        root: Path,
        metrics: Metrics,
        on_pause: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.settings = settings
        self.root = root
        self.give_up_after = settings.give_up_after * 3600
        self.retry_base = settings.retry_base
        self.retry_max = settings.retry_max
        self.per_target = settings.concurrency
        self.budget = Budget(root, settings.min_free_bytes, settings.max_total_bytes)
        self.on_pause = on_pause
        self.config = worker.FetchConfig(
            settings.allow_private,
            settings.max_file_bytes,
            Timeouts(settings.connect_timeout, settings.read_timeout, settings.total_timeout),
            settings.tag,
            settings.artist,
            settings.album,
            settings.min_free_bytes,
            settings.max_total_bytes,
        )
        # spawn, not fork: relay has threads (the committer) that a forked child must not inherit mid-lock.
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._stopping = False
        self._context = context
        self._workers = self._new_pool()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="archive")
        self.results = Counter("relay_downloads", "Download attempts by result", ["result"], registry=metrics.registry)
        self.bytes = Counter("relay_download_bytes", "Bytes of files downloaded", registry=metrics.registry)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.settings.concurrency,
            mp_context=self._context,
            initializer=worker.init_worker,
            initargs=(self._stop, os.getpid()),
        )

    async def start(self) -> None:
        """Create the archive folder and measure it (for max_total_bytes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(self._writer, self.budget.measure)

    async def stop(self) -> None:
        """Ask running transfers to stop (their parts are kept and resumed after the restart)."""
        self._stopping = True
        self._stop.set()

    async def close(self) -> None:
        """End the worker processes once the queue has stopped."""
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._writer.shutdown(wait=False, cancel_futures=True)

    def decide(self, delivery: Delivery) -> list[JobSpec]:
        """One job per file the delivery links to, plus its lyrics and the task's meta.json."""
        return [
            JobSpec(p.key, [LANE], _data(p, delivery), delivery.get("task_id"), delivery["id"]) for p in plan(delivery)
        ]

    def plan(self, target: str, due: list[Job], now: float) -> tuple[list[list[Job]], float | None]:
        """Each file on its own."""
        return plan_each(due, self.per_target)

    async def perform(self, target: str, jobs: list[Job]) -> list[Attempt]:
        """One attempt at each job (the plan gives them one at a time)."""
        return [await self._attempt(job.data) for job in jobs]

    async def _attempt(self, data: dict[str, Any]) -> Attempt:
        role = data.get("role")
        try:
            dest = naming.inside(self.root, data["folder"], data["name"])
        except naming.UnsafePath as exc:
            return self._count(Attempt(False, str(exc), retry=False))
        loop = asyncio.get_running_loop()
        try:
            if role in ("text", "meta"):
                write = metafile.merge if role == "meta" else metafile.write_text
                result = await loop.run_in_executor(self._writer, write, dest, data)
                return Attempt(True, result=result)
            needed = 0
            while True:
                if not await self._room(needed):
                    return Attempt(False, "stopped before it was complete; resumes after the restart")
                try:
                    result = await loop.run_in_executor(
                        self._workers, worker.fetch_file, dest, data, self.config, self.budget.total
                    )
                except NoRoom as exc:
                    self._paused(str(exc))
                    needed = exc.needed
                    await asyncio.sleep(ROOM_CHECK)
                    continue
                self._resumed()
                self.budget.add(result.get("bytes") or 0)
                return self._count(Attempt(True, result=result, state=result.pop("state", None)))
        except Refused as exc:
            return self._count(Attempt(False, f"refused: {exc}", retry=False))
        except FetchError as exc:
            return self._count(Attempt(False, str(exc), retry=exc.retry))
        except BrokenProcessPool:
            if not self._stopping:  # a worker was killed (OOM?): a broken pool refuses all work, so start anew
                self._workers.shutdown(wait=False, cancel_futures=True)
                self._workers = self._new_pool()
            return self._count(Attempt(False, "the download worker ended unexpectedly"))
        except OSError as exc:
            return self._count(Attempt(False, f"cannot write {dest.name}: {exc.strerror or exc}"))

    def _count(self, attempt: Attempt) -> Attempt:
        result = "done" if attempt.ok else ("failed" if not attempt.retry else "retry")
        self.results.labels(result=result).inc()
        if attempt.ok and attempt.result and attempt.result.get("bytes"):
            self.bytes.inc(attempt.result["bytes"])
        return attempt

    async def _room(self, needed: int) -> bool:
        """Wait until the budget has room for `needed` bytes; False when relay is stopping meanwhile."""
        while not self._stopping:
            problem = self.budget.shortfall(needed)
            if problem is None:
                if needed:
                    self._resumed()
                return True
            self._paused(f"paused: {problem}")
            await asyncio.sleep(ROOM_CHECK)
        return False

    def _resumed(self) -> None:
        if self.budget.problem is not None:
            logger.info("downloads resume: there is room again")
            self.budget.problem = None

    def _paused(self, reason: str) -> None:
        if self.budget.problem is None:
            logger.warning("downloads %s", reason)
            self.on_pause(reason)
        self.budget.problem = reason


def _data(planned: Any, delivery: Delivery) -> dict[str, Any]:
    data: dict[str, Any] = planned.data()
    if planned.role == "meta":
        data["meta"] = metafile.contribution(delivery)
    return data
