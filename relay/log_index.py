"""The read index of the log: where each archived delivery sits, by task and by time, in SQLite beside the log.

Archives never change once rotation has written them, so each is indexed once: per document its task, stage,
outcome, arrival time and byte range in the file; per archive its first and last arrival. A task view then reads
only that task's documents (one `pread` each), and `since`/`limit` open only the archives that can hold the answer.

The index is derived data and the TinyDB files stay the record: `callbacks-index.sqlite` may be deleted at any
time. An archive it does not know (written by an older relay, or rotated just before a crash) is read in full
until relay indexes it (indexer.py: once at start, off the event loop); the rows of archives that are gone
(retention, `relay prune`) are ignored by readers and dropped then too. SQLite rather than a JSON sidecar: a task
lookup is one B-tree probe on disk, so neither memory nor the time to answer grows with the log.

This module holds the schema and the reading side; indexer.py writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

from relay.query import Filters

SCHEMA_VERSION = 1
SCHEMA = f"""
BEGIN;
CREATE TABLE archives (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tbl TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    first_at REAL,      -- earliest received_at in the archive (Unix time), null when none parses
    last_at REAL
);
CREATE TABLE docs (
    archive INTEGER NOT NULL,
    doc_id INTEGER NOT NULL,
    start INTEGER,      -- byte range of the document in the file; null: read the whole file
    length INTEGER,
    task_id TEXT,
    received REAL,
    stage TEXT,
    ok INTEGER,         -- 1 true, 0 false, null otherwise
    PRIMARY KEY (archive, doc_id)
) WITHOUT ROWID;
CREATE INDEX docs_by_task ON docs (task_id) WHERE task_id IS NOT NULL;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# The filters of query.Filters; a condition is off when its parameter is null (static SQL, no string building).
_BY_TASK = """
SELECT archive, doc_id, start, length FROM docs
WHERE task_id = :task
    AND (:stage IS NULL OR stage = :stage)
    AND (:failed = 0 OR ok = 0)
    AND (:after IS NULL OR received >= :after)
"""
_IN_ARCHIVE = """
SELECT doc_id, start, length FROM docs
WHERE archive = :archive
    AND (:task IS NULL OR task_id = :task)
    AND (:stage IS NULL OR stage = :stage)
    AND (:failed = 0 OR ok = 0)
    AND (:after IS NULL OR received >= :after)
ORDER BY doc_id DESC LIMIT :limit
"""

_DAILY = """
SELECT CAST(received / 86400 AS INTEGER) AS day, ok, count(*) FROM docs
WHERE archive = :archive AND received >= :after
GROUP BY day, ok
"""

#: (table, first id, last id, path) of an archive file, as store.archives lists them.
ArchiveFile = tuple[str, int, int, Path]
#: Where a document sits: (doc id, start, length); start and length are None when unknown.
Location = tuple[int, int | None, int | None]


def index_path(log_path: Path) -> Path:
    """The index of the log at `log_path` (`callbacks.json` -> `callbacks-index.sqlite`)."""
    return log_path.with_name(f"{log_path.stem}-index.sqlite")


class Indexed(NamedTuple):
    """What the index knows of one archive file (a tuple: a thousand are made per read at a million deliveries)."""

    id: int
    size: int
    first_at: float | None
    last_at: float | None


class IndexReader:
    """Read-only lookups, for the CLI and the admin app's read threads; any SQLite error reads as no index."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, log_path: Path) -> IndexReader | None:
        """The index of the log at `log_path`, or None when there is none usable."""
        path = index_path(log_path)
        if not path.exists():
            return None
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2, check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return cls(conn)
        except sqlite3.Error:
            pass  # being created, or damaged: the writer rebuilds it
        conn.close()
        return None

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def archives(self, table: str) -> dict[str, Indexed]:
        """The indexed archives of `table` by file name."""
        query = "SELECT name, id, size, first_at, last_at FROM archives WHERE tbl = ?"
        return {row[0]: Indexed(*row[1:]) for row in self._conn.execute(query, (table,))}

    def by_task(self, filters: Filters, after: float | None) -> dict[int, list[Location]]:
        """Where the documents of `filters.task` that match the other filters sit, by archive id."""
        found: dict[int, list[Location]] = {}
        for archive, doc_id, start, length in self._conn.execute(_BY_TASK, _params(filters, after)):
            found.setdefault(archive, []).append((doc_id, start, length))
        return found

    def daily(self, archive: int, after: float) -> list[tuple[int, int | None, int]]:
        """(UTC day number, ok, count) of one archive's documents that arrived at `after` or later."""
        return list(self._conn.execute(_DAILY, {"archive": archive, "after": after}))

    def location(self, name: str, doc_id: int) -> tuple[int | None, int | None] | None:
        """Where one document sits in the archive `name` (start, length), or None when not indexed there."""
        query = "SELECT start, length FROM docs WHERE archive = (SELECT id FROM archives WHERE name = ?) AND doc_id = ?"
        found = self._conn.execute(query, (name, doc_id)).fetchone()
        return (found[0], found[1]) if found else None

    def in_archive(self, archive: int, filters: Filters, after: float | None, limit: int | None) -> list[Location]:
        """Where the matching documents of one archive sit, newest first, at most `limit` of them."""
        params = {**_params(filters, after), "archive": archive, "limit": -1 if limit is None else limit}
        return [(doc_id, start, length) for doc_id, start, length in self._conn.execute(_IN_ARCHIVE, params)]


def _params(filters: Filters, after: float | None) -> dict[str, object]:
    return {"task": filters.task, "stage": filters.stage, "failed": int(filters.failed), "after": after}


def unindexed(log_path: Path, on_disk: list[ArchiveFile]) -> list[str]:
    """The archives in `on_disk` the index does not hold (all of them when there is no index)."""
    reader = IndexReader.open(log_path)
    if reader is None:
        return [path.name for *_, path in on_disk]
    try:
        known = {name for table in {a[0] for a in on_disk} for name in reader.archives(table)}
    except sqlite3.Error:
        known = set()  # unusable: as good as none
    finally:
        reader.close()
    return [path.name for *_, path in on_disk if path.name not in known]
