"""Writing the read index (log_index.py): indexing archive files, and keeping the index in step with the log
from a thread of its own.

Nothing here is awaited on the way to an acknowledgement: rotation hands each new archive over and goes on, and
the index catches up in the background. Until it has, readers read that archive in full, so a slow or failed
index update costs read time, never a missing delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.jsonfiles import Doc, fragment_offsets, locate_documents
from relay.log_index import SCHEMA, SCHEMA_VERSION, ArchiveFile, Indexed, index_path
from relay.timestamps import parse_iso

logger = logging.getLogger("relay.index")

_ENTRIES = "SELECT tbl, name, id, size, first_at, last_at FROM archives"


@dataclass(frozen=True)
class Row:
    """What the index keeps of one archived document."""

    doc_id: int
    start: int | None
    length: int | None
    task_id: str | None
    received: float | None
    stage: str | None
    ok: int | None


def row(doc_id: int, doc: Doc, start: int | None = None, length: int | None = None) -> Row:
    """The index row of a document (fields of other types than the filters compare with are left out)."""
    when = parse_iso(doc.get("received_at"))
    task, stage, ok = doc.get("task_id"), doc.get("stage"), doc.get("ok")
    return Row(
        doc_id,
        start,
        length,
        task if isinstance(task, str) else None,
        when.timestamp() if when else None,
        stage if isinstance(stage, str) else None,
        1 if ok is True else 0 if ok is False else None,
    )


def scan_archive(path: Path, table: str) -> tuple[list[Row], os.stat_result]:
    """The rows of an archive file read from disk, and its stat."""
    with path.open("rb") as file:
        stat = os.fstat(file.fileno())
        data = file.read()
    exact = data.isascii()  # offsets in the text are byte offsets only then; relay writes ASCII
    return [
        row(doc_id, doc, start if exact else None, end - start if exact else None)
        for doc_id, start, end, doc in locate_documents(data.decode("utf-8"), table)
    ], stat


class IndexWriter:
    """Keeps the index in step with the archives; used from one thread only (the store's index thread)."""

    def __init__(self, log_path: Path) -> None:
        self.path = index_path(log_path)
        self._conn: sqlite3.Connection | None = None
        #: What the index holds, by table and archive name, as committed. Replaced on each change, never changed
        #: in place, so another thread may read it without a lock.
        self.entries: dict[str, dict[str, Indexed]] = {}

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:  # unreadable or corrupt: it is derived data, start afresh
                logger.warning("rebuilding the read index %s: %s", self.path.name, exc)
                self.discard()
                self._conn = self._open()
            entries: dict[str, dict[str, Indexed]] = {}
            for table, name, *entry in self._conn.execute(_ENTRIES):
                entries.setdefault(table, {})[name] = Indexed(*entry)
            self.entries = entries
        return self._conn

    def _open(self) -> sqlite3.Connection:
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite would create it world-readable
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        if version not in (0, SCHEMA_VERSION):
            conn.close()
            raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        return conn

    def discard(self) -> None:
        """Close and delete the index file (it is rebuilt from the archives)."""
        self.close()
        self.entries = {}
        for suffix in ("", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def known(self) -> dict[str, tuple[int, int]]:
        """Each indexed archive's name with the size and mtime it had when indexed."""
        rows = self._db().execute("SELECT name, size, mtime_ns FROM archives")
        return {name: (size, mtime) for name, size, mtime in rows}

    def add(self, path: Path, table: str, rows: list[Row], stat: os.stat_result) -> None:
        """Index (or index again) one archive file, in one transaction."""
        times = [r.received for r in rows if r.received is not None]
        db = self._db()
        with _transaction(db):
            self._forget(db, [path.name])
            cursor = db.execute(
                "INSERT INTO archives (name, tbl, size, mtime_ns, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?)",
                (path.name, table, stat.st_size, stat.st_mtime_ns, min(times, default=None), max(times, default=None)),
            )
            archive = cursor.lastrowid
            assert archive is not None
            db.executemany(
                "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((archive, r.doc_id, r.start, r.length, r.task_id, r.received, r.stage, r.ok) for r in rows),
            )
        entry = Indexed(archive, stat.st_size, min(times, default=None), max(times, default=None))
        self._replace(path.name, table, entry)

    def forget(self, names: Iterable[str]) -> None:
        """Drop the rows of archives that are gone."""
        names = list(names)
        if names:
            db = self._db()
            with _transaction(db):
                self._forget(db, names)
            for name in names:
                self._replace(name)

    def _replace(self, name: str, table: str | None = None, entry: Indexed | None = None) -> None:
        entries = {kind: {k: v for k, v in held.items() if k != name} for kind, held in self.entries.items()}
        if table is not None and entry is not None:
            entries.setdefault(table, {})[name] = entry
        self.entries = entries

    @staticmethod
    def _forget(db: sqlite3.Connection, names: list[str]) -> None:
        for name in names:
            db.execute("DELETE FROM docs WHERE archive IN (SELECT id FROM archives WHERE name = ?)", (name,))
            db.execute("DELETE FROM archives WHERE name = ?", (name,))

    def reconcile(self, on_disk: list[ArchiveFile], stop: threading.Event | None = None) -> int:
        """Index the archives it lacks (or that changed since), newest first, and forget gone ones; returns how
        many it indexed. Each archive is committed on its own, so an interrupted rebuild resumes where it was."""
        known = self.known()
        self.forget(set(known) - {path.name for *_, path in on_disk})
        indexed = 0
        for table, _, _, path in sorted(on_disk, key=lambda a: a[2], reverse=True):
            if stop is not None and stop.is_set():
                break
            try:
                stat = path.stat()
                if known.get(path.name) == (stat.st_size, stat.st_mtime_ns):
                    continue
                rows, stat = scan_archive(path, table)
            except FileNotFoundError:
                continue  # pruned meanwhile
            except (OSError, ValueError) as exc:  # left unindexed: readers read it in full
                logger.error("cannot index %s: %s", path.name, exc)
                continue
            self.add(path, table, rows, stat)
            indexed += 1
        return indexed


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Indexer:
    """Runs every index update, one at a time, on a thread of its own."""

    def __init__(self, log_path: Path, list_archives: Callable[[], list[ArchiveFile]]) -> None:
        self._writer = IndexWriter(log_path)
        self._list_archives = list_archives
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="index")
        self._stop = threading.Event()
        self._rebuilt = False
        self.building = False

    def indexed(self, table: str) -> dict[str, Indexed]:
        """The archives of `table` the index holds, by name (do not mutate)."""
        return self._writer.entries.get(table, {})

    def start(self) -> None:
        """Index what the index lacks and forget what is gone, in the background (once per start)."""
        self._submit(self._reconcile)

    def archived(self, path: Path, table: str, docs: dict[int, Doc], frags: dict[int, str]) -> None:
        """Index an archive rotation has just written from these documents and their fragments."""
        self._submit(self._add, path, table, docs, frags)

    def pruned(self, paths: list[Path]) -> None:
        """Forget archives retention deleted."""
        self._submit(self._writer.forget, [path.name for path in paths])

    async def idle(self) -> None:
        """Wait until every update handed over so far is done."""
        if not self._stop.is_set():
            await asyncio.wrap_future(self._executor.submit(lambda: None))

    async def close(self) -> None:
        """Stop a rebuild in progress, finish what is queued and close the index."""
        self._stop.set()
        closed = self._executor.submit(self._writer.close)
        self._executor.shutdown(wait=False)
        await asyncio.wrap_future(closed)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._stop.is_set():
            self._executor.submit(self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except sqlite3.OperationalError as exc:  # e.g. locked for long: this archive is read in full meanwhile
            logger.error("cannot update the read index: %s", exc)
        except sqlite3.DatabaseError as exc:  # damaged: derived data, so rebuilt from the archives, once a run
            if self._rebuilt:
                logger.error("cannot update the read index: %s", exc)
                return
            self._rebuilt = True
            logger.warning("the read index is damaged (%s): rebuilding it from the archives", exc)
            self._writer.discard()
            self._guarded(self._reconcile)
        except (OSError, ValueError) as exc:
            logger.error("cannot update the read index: %s", exc)

    def _reconcile(self) -> None:
        self.building = True
        try:
            indexed = self._writer.reconcile(self._list_archives(), self._stop)
        finally:
            self.building = False
        if indexed:
            logger.info("read index: indexed %d archive(s)", indexed)

    def _add(self, path: Path, table: str, docs: dict[int, Doc], frags: dict[int, str]) -> None:
        offsets = fragment_offsets(table, frags)
        rows = [row(doc_id, docs[doc_id], *offsets[doc_id]) for doc_id in frags]
        self._writer.add(path, table, rows, path.stat())
