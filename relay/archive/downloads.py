"""The `downloads` job kind: each file a recorded delivery links to, fetched into archive.dir by the job queue.

The queue (jobs.py) makes downloads durable, deduped by URL and retried with backoff across restarts; this module
decides what to fetch (plan.py) and makes one attempt. Transfers run in the kind's own threads (`concurrency` of
them), so they never take the threads the log's commits use, and never hold up an acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from relay.archive import metafile, naming, tagging
from relay.archive.budget import Budget, NoRoom
from relay.archive.partfile import fsync_dir, sha256_file
from relay.archive.plan import PREVIEW, plan
from relay.archive.safefetch import FetchError, Limits, Refused, Timeouts, fetch_bytes_sync, fetch_to_file_sync
from relay.config import ArchiveSettings
from relay.jobs import Attempt, Job, JobSpec, plan_each
from relay.metrics import Metrics
from relay.model import Delivery

logger = logging.getLogger("relay.archive")

KIND = "downloads"
LANE = ("archive", "archive")
COVER_MAX_BYTES = 20 << 20
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus")
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
        self.stopping = threading.Event()
        self._executor = ThreadPoolExecutor(settings.concurrency + 1, thread_name_prefix="download")
        self.results = Counter("relay_downloads", "Download attempts by result", ["result"], registry=metrics.registry)
        self.bytes = Counter("relay_download_bytes", "Bytes of files downloaded", registry=metrics.registry)
        self.timeouts = Timeouts(settings.connect_timeout, settings.read_timeout, settings.total_timeout)

    async def start(self) -> None:
        """Create the archive folder and measure it (for max_total_bytes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, self.budget.measure)

    async def stop(self) -> None:
        """Ask running transfers to stop (their parts are kept and resumed after the restart)."""
        self.stopping.set()

    async def close(self) -> None:
        """Release the transfer threads once the queue has stopped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

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
                result = await loop.run_in_executor(self._executor, write, dest, data)
                return Attempt(True, result=result)
            needed = 0
            while True:
                if not await self._room(needed):
                    return Attempt(False, "stopped before it was complete; resumes after the restart")
                try:
                    result = await loop.run_in_executor(self._executor, self._fetch, dest, data)
                except NoRoom as exc:
                    self._paused(str(exc))
                    needed = exc.needed
                    await asyncio.sleep(ROOM_CHECK)
                    continue
                self._resumed()
                return self._count(Attempt(True, result=result, state=result.pop("state", None)))
        except Refused as exc:
            return self._count(Attempt(False, f"refused: {exc}", retry=False))
        except FetchError as exc:
            return self._count(Attempt(False, str(exc), retry=exc.retry))
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
        while not self.stopping.is_set():
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

    # -- in a transfer thread --------------------------------------------------------------------------

    def _limits(self, **changes: Any) -> Limits:
        limits = Limits(self.settings.allow_private, self.settings.max_file_bytes, self.timeouts, cancel=self.stopping)
        return dataclasses.replace(limits, **changes)

    def _fetch(self, dest: Path, data: dict[str, Any]) -> dict[str, Any]:
        role, url = data["role"], data["url"]
        if role == "preview" and _final_exists(dest.parent, data.get("stem", "")):
            return {"state": "superseded", "path": None}
        if dest.exists():  # landed before a crash kept its result from being recorded
            size, digest = sha256_file(dest)
            return {"path": str(dest), "bytes": size, "sha256": digest}
        prepare = self._tagger(dest, data) if role == "audio" and self.settings.tag else None
        fetched = fetch_to_file_sync(url, dest, self._limits(guard=self.budget.guard), prepare=prepare)
        self.budget.add(fetched.bytes)
        if role == "audio":
            _drop_previews(dest.parent, data.get("stem", ""))
        return {
            "path": str(dest),
            "bytes": fetched.bytes,
            "sha256": fetched.sha256,
            "content_type": fetched.content_type,
        }

    def _tagger(self, dest: Path, data: dict[str, Any]) -> Callable[[Path], None]:
        def prepare(part: Path) -> None:
            tags = data.get("tags") or {}
            album = self.settings.album or tags.get("album")
            cover = self._cover(dest.parent, data)
            wanted = tagging.Tags(
                tags.get("title"), self.settings.artist or None, album, tagging.genres(tags.get("genre")), cover
            )
            try:
                tagging.write_tags(part, wanted)
            except Exception as exc:  # mutagen's errors vary by format; an untagged song beats no song
                logger.warning("cannot tag %s: %s", dest.name, exc)

        return prepare

    def _cover(self, folder: Path, data: dict[str, Any]) -> bytes | None:
        """The track's cover: from disk if its download landed, else fetched now (and kept for its own job)."""
        name, url = data.get("cover_name"), data.get("cover_url")
        if not name or not url:
            return None
        path = folder / str(name)
        with contextlib.suppress(OSError):
            return path.read_bytes()
        try:
            body, _ = fetch_bytes_sync(url, self._limits(max_bytes=COVER_MAX_BYTES))
        except (FetchError, Refused, OSError) as exc:
            logger.info("no cover for %s: %s", data.get("name"), exc)
            return None
        metafile.atomic_bytes(path, body)
        return body


def _data(planned: Any, delivery: Delivery) -> dict[str, Any]:
    data: dict[str, Any] = planned.data()
    if planned.role == "meta":
        data["meta"] = metafile.contribution(delivery)
    return data


def _final_exists(folder: Path, stem: str) -> bool:
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(stem + ".") and entry.suffix.lower() in AUDIO_EXTENSIONS:
                return True
    return False


def _drop_previews(folder: Path, stem: str) -> None:
    removed = False
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(stem + PREVIEW):
                entry.unlink(missing_ok=True)
                removed = True
    if removed:
        fsync_dir(folder)
