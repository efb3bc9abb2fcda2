"""The callback log: one TinyDB document per delivery, rotated into archive files, read across all of them.

Layout beside `storage.path` (say `callbacks.json`):
- `callbacks.json`: the live TinyDB file (tables `callbacks` and `rejected`), small because of rotation;
- `callbacks.json.journal` (and `.journal.old` while it is being folded in): changes not yet written into it
  (see journal.py);
- `callbacks-archive-<table>-<first id>-<last id>.json`: older deliveries, each a TinyDB file of the same form;
- `callbacks-index.sqlite`: the read index of the archives, derived from them (see log_index.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from relay.errors import StoreError
from relay.indexer import Indexer
from relay.journal import JournaledDB
from relay.jsonfiles import Doc, atomic_write, read_table, read_tinydb, render_fragments
from relay.log_index import Indexed
from relay.model import Delivery
from relay.payloads import advance, outcome
from relay.timestamps import now_iso as now_iso  # re-exported: others take the two from here
from relay.timestamps import parse_iso as parse_iso

logger = logging.getLogger("relay.store")

TABLES = ("callbacks", "rejected")
#: How many tasks and payload fingerprints are remembered for duplicate and state tracking. The provider
#: retries for 21 minutes, so this is generous while keeping memory flat however long the log grows.
MEMORY = 20_000

Subscriber = Callable[[Delivery], None]


def archive_pattern(path: Path) -> re.Pattern[str]:
    """Matches the archive files of the log at `path`, capturing table, first and last id."""
    return re.compile(re.escape(path.stem) + r"-archive-(callbacks|rejected)-(\d+)-(\d+)\.json")


def archive_names(path: Path, table: str | None = None) -> list[tuple[str, int, int, str]]:
    """Archive files beside the log, oldest first, as (table, first id, last id, file name).

    Names rather than paths: a read at a million deliveries lists a thousand archives and opens a few.
    """
    pattern = archive_pattern(path)
    found = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path.parent):  # noqa: PTH208 - names only: a Path each costs more than the listing
            match = pattern.fullmatch(name)
            if match and (table is None or match[1] == table):
                found.append((match[1], int(match[2]), int(match[3]), name))
    return sorted(found, key=lambda a: (a[0], a[1]))


def archives(path: Path, table: str | None = None) -> list[tuple[str, int, int, Path]]:
    """Archive files beside the log, oldest first, as (table, first id, last id, path)."""
    return [(kind, first, last, path.with_name(name)) for kind, first, last, name in archive_names(path, table)]


@dataclass(frozen=True)
class Snapshot:
    """What relay holds in memory about one table of its log, taken on the event loop for a read elsewhere."""

    live: Mapping[int, Doc]  # the documents not yet archived
    archives: list[tuple[str, int, int, str]]  # as archive_names lists them
    indexed: Mapping[str, Indexed]  # what the read index holds, by archive name


class DeliveryStore:
    """The durable log of deliveries, with per-task state and duplicate detection."""

    def __init__(self, path: Path, rotate_records: int = 1000, retention_days: float = 0) -> None:
        self.path = path
        self.rotate_records = rotate_records
        self.retention_days = retention_days
        self.db = JournaledDB(path, TABLES)
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._states: OrderedDict[str, str] = OrderedDict()
        self._rotating = asyncio.Lock()
        self._rotation: asyncio.Task[None] | None = None
        self._subscribers: list[Subscriber] = []
        self.indexer = Indexer(path, lambda: archives(path))
        # The archive files, kept up to date by rotation and retention, so reads need not list the folder.
        self._archives: list[tuple[str, int, int, str]] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` on the loop with each delivery once it is durably recorded, however it came in."""
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop calling `subscriber`."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)

    def _publish(self, delivery: Delivery) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(delivery)
            except Exception:  # a consumer's bug must not turn a recorded delivery into an error
                logger.exception("subscriber failed for delivery %s", delivery["id"])

    @property
    def last_error(self) -> str | None:
        """Why the last write failed, or None when writing works."""
        return self.db.last_error

    async def open(self) -> None:
        """Load the live file, reconcile it with the archives and start writing."""
        # Reading a large log takes a while: off the loop, which meanwhile answers early senders with 503.
        await asyncio.to_thread(self.db.open)
        self._archives = archive_names(self.path)
        for table in TABLES:
            done = max((last for kind, _, last, _ in self._archives if kind == table), default=0)
            stale = [doc_id for doc_id in self.db.table(table) if doc_id <= done]
            if stale:  # a crash between writing an archive and the live file: keep the archived copy
                self.db.drop_from_memory(table, stale)
            self.db.continue_ids_after(table, done)
        for doc in await asyncio.to_thread(lambda: list(self._recent_for_memory())):
            self._remember(doc)
        # No snapshot here: the maintainer writes one within flush_interval if anything changed, and a start on a
        # full disk must not fail for want of room to rewrite the whole file.
        await self.db.start()
        self.indexer.start()

    async def close(self) -> None:
        """Commit everything and release the file."""
        if self._rotation is not None:
            await self._rotation
        await self.indexer.close()
        await self.db.close()

    def snapshot(self, table: str = "callbacks") -> Snapshot:
        """The live table, the archives and what the index holds of them, for a read off the event loop.

        Taken in one go on the loop: a document rotation moves is then either in `live` or in an archive listed.
        """
        archived = [entry for entry in self._archives if entry[0] == table]
        return Snapshot(dict(self.db.table(table)), archived, self.indexer.indexed(table))

    def _recent_for_memory(self) -> Iterator[Doc]:
        """The newest `MEMORY` deliveries, oldest first, reduced to what duplicate and state tracking need.

        Archives are read one at a time and only four fields of each document are kept, so memory at start
        does not depend on how large the log has grown.
        """
        chunks = [[_memo(doc) for doc in self.db.table("callbacks").values()]]
        kept = len(chunks[0])
        for _, _, _, path in reversed(archives(self.path, "callbacks")):
            if kept >= MEMORY:
                break
            chunk = [_memo(doc) for doc in read_tinydb(path).get("callbacks", {}).values()]
            chunks.insert(0, chunk)
            kept += len(chunk)
        recent = [memo for chunk in chunks for memo in chunk]
        yield from recent[-MEMORY:]

    def _remember(self, doc: Doc) -> None:
        fingerprint = doc.get("fingerprint")
        if isinstance(fingerprint, str):
            self._seen[fingerprint] = doc.get("id", 0)
            self._seen.move_to_end(fingerprint)
            while len(self._seen) > MEMORY:
                self._seen.popitem(last=False)
        task_id, state = doc.get("task_id"), doc.get("task_state")
        if isinstance(task_id, str) and isinstance(state, str):
            self._states[task_id] = state
            self._states.move_to_end(task_id)
            while len(self._states) > MEMORY:
                self._states.popitem(last=False)

    def task_state(self, task_id: str | None) -> str | None:
        """The state a task has reached so far (see payloads.advance)."""
        return self._states.get(task_id) if task_id else None

    async def record(self, doc: Doc) -> Delivery:
        """Add a delivery; returns it with `id`, `duplicate` and `task_state` once it is on disk, then publishes it."""
        fingerprint = doc.get("fingerprint")
        seen = isinstance(fingerprint, str) and fingerprint in self._seen
        task_id = doc.get("task_id")
        previous_state = self.task_state(task_id)
        state = advance(previous_state, doc.get("stage"), doc.get("ok"))
        # A result both polled and called back repeats an outcome in another body: a duplicate all the same.
        said = outcome(doc.get("stage"), doc.get("ok"))
        duplicate = seen or (said in ("complete", "failed") and previous_state == said)
        doc = {**doc, "id": self.db.next_id("callbacks"), "duplicate": duplicate, "task_state": state}
        future = self.db.put_nowait("callbacks", doc, doc["id"])
        self._remember(doc)  # before awaiting, so a concurrent identical delivery is seen as a duplicate
        try:
            await future
        except BaseException:
            if isinstance(fingerprint, str) and not seen:
                self._seen.pop(fingerprint, None)
            if isinstance(task_id, str) and previous_state is not None:
                self._states[task_id] = previous_state
            elif isinstance(task_id, str):
                self._states.pop(task_id, None)
            raise
        self._rotate_soon()
        delivery: Delivery = doc  # type: ignore[assignment]  # built by ingest/payloads with every field
        self._publish(delivery)
        return delivery

    async def record_rejected(self, doc: Doc) -> Doc:
        """Add a rejected request (bad JSON, too large, stalled) with its raw bytes."""
        doc = {**doc, "id": self.db.next_id("rejected")}
        await self.db.put("rejected", doc, doc["id"])
        self._rotate_soon()
        return doc

    def _rotate_soon(self) -> None:
        # In the background: the delivery that crosses the limit must not wait for an archive to be written.
        due = any(len(self.db.table(t)) > self.rotate_records * 2 for t in TABLES)
        if due and (self._rotation is None or self._rotation.done()):
            self._rotation = asyncio.create_task(self._rotate_logged(), name="rotate")

    async def _rotate_logged(self) -> None:
        try:
            await self.rotate()
        except (OSError, StoreError) as exc:  # the live file keeps the deliveries; tried again on the next one
            logger.error("cannot rotate %s: %s", self.path.name, exc)

    async def rotate(self) -> None:
        """Move the oldest deliveries into an archive file, keeping `rotate_records` in the live file."""
        async with self._rotating:
            moved_any = False
            for table in TABLES:
                docs = self.db.table(table)
                if len(docs) <= self.rotate_records * 2:
                    continue
                ids = list(docs)[: len(docs) - self.rotate_records]
                frags = self.db.fragments(table)
                moved = {doc_id: frags[doc_id] for doc_id in ids}  # copied here: the loop owns the tables
                moved_docs = {doc_id: docs[doc_id] for doc_id in ids}
                name = f"{self.path.stem}-archive-{table}-{ids[0]:09d}-{ids[-1]:09d}.json"
                await asyncio.to_thread(_write_archive, self.path.with_name(name), table, moved)
                # Only once the archive is durable; a crash before the next snapshot keeps both copies,
                # and open() drops the live one.
                self._archives.append((table, ids[0], ids[-1], name))
                self.db.drop_from_memory(table, ids)
                self.indexer.archived(self.path.with_name(name), table, moved_docs, moved)
                moved_any = True
                logger.info("rotated %d %s into %s", len(ids), table, name)
            if moved_any:
                await self.db.flush()

    def prune(self, older_than_days: float | None = None) -> list[Path]:
        """Delete archive files whose newest delivery is older than the retention period."""
        days = self.retention_days if older_than_days is None else older_than_days
        removed = prune_archives(self.path, days)
        gone = {path.name for path in removed}
        self._archives = [entry for entry in self._archives if entry[3] not in gone]
        self.indexer.pruned(removed)
        return removed


def _write_archive(path: Path, table: str, frags: dict[int, str]) -> None:
    atomic_write(path, render_fragments({table: frags}))


def _memo(doc: Doc) -> Doc:
    return {key: doc.get(key) for key in ("id", "fingerprint", "task_id", "task_state")}


def prune_archives(path: Path, days: float) -> list[Path]:
    """Delete the archives of the log at `path` holding only deliveries older than `days` (0 keeps all).

    Archives are read oldest first and the walk stops at the first one still within the period: ids, and so
    archives, follow arrival order, so a start reads one archive when there is nothing to delete.
    """
    if days <= 0:
        return []
    cutoff = datetime.now(UTC) - timedelta(days=days)
    removed = []
    for table in TABLES:
        for _, _, _, archive in archives(path, table):
            docs = read_tinydb(archive).get(table, {})
            newest = max((t for t in (parse_iso(d.get("received_at")) for d in docs.values()) if t), default=None)
            if newest is not None and newest >= cutoff:
                break
            archive.unlink(missing_ok=True)
            removed.append(archive)
    return removed


def read_all(path: Path, table: str = "callbacks", newest: int | None = None, after: int = 0) -> list[Doc]:
    """Every document of `table` across the journal, the live file and its archives, oldest first.

    Read in the order documents move (journal, then live file, then archives) so that a rotation or
    flush happening meanwhile can only show a document twice, which the merge by id absorbs, never hide it.
    With `newest`, archives are read only as far back as needed; with `after`, archives holding only
    older ids are skipped.
    """
    merged = read_table(path, table)
    for _, _, last, archive in reversed(archives(path, table)):
        if (newest is not None and len(merged) >= newest) or last <= after:
            break
        for doc_id, doc in read_tinydb(archive).get(table, {}).items():
            merged.setdefault(doc_id, doc)
    docs = [merged[k] for k in sorted(merged) if k > after]
    return docs[-newest:] if newest is not None else docs
