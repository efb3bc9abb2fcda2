"""Where the page's data comes from: plain functions over the log and the job queue's files, run off the event loop.

They read what the CLI reads (journal, live file, archives), through the read index (relay/reads.py) where it
helps. Given a `snapshot` (what the running relay holds in memory, taken on the loop), they take the live table
and the archive list from it instead of the files; `check` is called between archives and may raise to stop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from relay.job_files import job_archives
from relay.jsonfiles import Doc, read_table, read_tinydb
from relay.log_index import IndexReader, unindexed
from relay.query import Filters
from relay.reads import read_at, read_log
from relay.store import Snapshot, archive_names, archives, parse_iso, read_all
from relay.web.chart import OUTCOMES, Counts, outcome_of

#: How far back beyond a task's oldest delivery found its page still looks (see task_deliveries).
TASK_SPAN = timedelta(days=2)
#: The most deliveries a task view holds (a real task has a handful; this bounds a pathological one).
TASK_LIMIT = 10_000
#: Archives the index may lack for reads to still go through it (reading those few in full). Under load the
#: archive rotation has just written is not indexed for a moment; an index being rebuilt lacks hundreds.
FEW_UNINDEXED = 8

Check = Callable[[], None]


def newest_first(
    log_path: Path, table: str = "callbacks", snapshot: Snapshot | None = None, check: Check | None = None
) -> Iterator[list[Doc]]:
    """Deliveries in chunks, newest first: the live file (with its journal), then each archive, newest first.

    A document seen twice (a rotation meanwhile writes it to an archive before dropping it from the live file)
    is given once.
    """
    seen: set[int] = set()
    live = read_table(log_path, table) if snapshot is None else snapshot.live
    seen.update(live)
    yield [live[k] for k in sorted(live, reverse=True)]
    names = archive_names(log_path, table) if snapshot is None else snapshot.archives
    for _, _, _, name in reversed(names):
        if check is not None:
            check()
        docs = read_tinydb(log_path.with_name(name)).get(table, {})
        fresh = [docs[k] for k in sorted(docs, reverse=True) if k not in seen]
        seen.update(docs)
        yield fresh


def task_deliveries(
    log_path: Path,
    task_id: str,
    complete: bool = False,
    snapshot: Snapshot | None = None,
    check: Check | None = None,
) -> list[Doc]:
    """Every delivery of one task, oldest first (at most the newest `TASK_LIMIT`).

    With every archive in the read index, the task index finds them at the cost of the task's own deliveries.
    Until then (an index being rebuilt) the log is read newest first, and (unless `complete`) only until it is
    `TASK_SPAN` older than the oldest delivery found: a task's deliveries come within minutes of each other (the
    provider retries for 21 minutes, a watched task is given up after a day), so a recent task's page does not
    read a year of archives. A task not found there is looked for in the whole log.
    """
    if complete or _mostly_indexed(log_path, snapshot):
        return read_log(log_path, Filters(task=task_id, limit=TASK_LIMIT), "callbacks", snapshot, check)
    found: list[Doc] = []
    oldest: datetime | None = None
    for chunk in newest_first(log_path, "callbacks", snapshot, check):
        for doc in chunk:
            if doc.get("task_id") == task_id:
                found.append(doc)
                oldest = parse_iso(doc.get("received_at")) or oldest
        last = parse_iso(chunk[-1].get("received_at")) if chunk else None
        if oldest is not None and last is not None and last < oldest - TASK_SPAN:
            break
    return sorted(found, key=lambda d: int(d.get("id") or 0))[-TASK_LIMIT:]


def _mostly_indexed(log_path: Path, snapshot: Snapshot | None) -> bool:
    """Whether there is a read index and it lacks at most a few archives (or there are none)."""
    if snapshot is not None:
        names, indexed = [name for *_, name in snapshot.archives], set(snapshot.indexed)
    else:
        on_disk = archives(log_path, "callbacks")
        names = [path.name for *_, path in on_disk]
        indexed = set(names) - set(unindexed(log_path, on_disk))
    return not names or (bool(indexed) and len(set(names) - indexed) <= FEW_UNINDEXED)


def one_delivery(log_path: Path, delivery_id: int, snapshot: Snapshot | None = None) -> Doc | None:
    """One delivery by id, or None: from the live file, else from the one archive whose id range holds it (only
    that delivery's bytes when the archive is indexed)."""
    live = read_table(log_path, "callbacks") if snapshot is None else snapshot.live
    if delivery_id in live:
        return live[delivery_id]
    names = archive_names(log_path, "callbacks") if snapshot is None else snapshot.archives
    for _, first, last, name in names:
        if first <= delivery_id <= last:
            found = _indexed_delivery(log_path, name, delivery_id)
            if found is None:  # not indexed (yet): the whole archive
                found = read_tinydb(log_path.with_name(name)).get("callbacks", {}).get(delivery_id)
            return found
    return None


def _indexed_delivery(log_path: Path, name: str, delivery_id: int) -> Doc | None:
    index = IndexReader.open(log_path)
    if index is None:
        return None
    try:
        where = index.location(name, delivery_id)
        if where is None:
            return None
        with log_path.with_name(name).open("rb") as file:
            doc = read_at(file.fileno(), *where)
    except (sqlite3.Error, OSError):
        return None
    finally:
        index.close()
    return doc if doc is not None and doc.get("id", delivery_id) == delivery_id else None


def daily_outcomes(
    log_path: Path, since: date, snapshot: Snapshot | None = None, check: Check | None = None
) -> tuple[Counts, int] | None:
    """Deliveries per day and outcome from `since` on, and the newest id counted: from the live table, the read
    index (summed per day by SQLite, no archive opened) and the few archives it lacks yet (read in full); None when
    it lacks more than a few (being rebuilt: the caller then reads the log, see chart.tally)."""
    after = datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp()
    live = read_table(log_path, "callbacks") if snapshot is None else snapshot.live
    names = archive_names(log_path, "callbacks") if snapshot is None else snapshot.archives
    index = IndexReader.open(log_path) if names else None
    counts: Counts = {}
    docs: dict[int, Mapping[str, Any]] = dict(live)
    try:
        indexed = {} if index is None else (index.archives("callbacks") if snapshot is None else snapshot.indexed)
        lacking = [name for *_, name in names if name not in indexed]
        if lacking and (not indexed or len(lacking) > FEW_UNINDEXED):
            return None
        for name in lacking:
            for doc_id, doc in read_tinydb(log_path.with_name(name)).get("callbacks", {}).items():
                docs.setdefault(doc_id, doc)
        for _, _, _, name in names:
            entry = indexed.get(name)
            if entry is None or entry.last_at is None or entry.last_at < after:
                continue
            if check is not None:
                check()
            assert index is not None
            for day, ok, count in index.daily(entry.id, after):
                outcome = "ok" if ok == 1 else "failed" if ok == 0 else "other"
                counts.setdefault(date.fromordinal(_EPOCH + day), dict.fromkeys(OUTCOMES, 0))[outcome] += count
    except sqlite3.Error:
        return None
    finally:
        if index is not None:
            index.close()
    for kept in docs.values():
        when = parse_iso(kept.get("received_at"))
        if when is not None and when.date() >= since:
            counts.setdefault(when.date(), dict.fromkeys(OUTCOMES, 0))[outcome_of(kept)] += 1
    newest_id = max([*docs, *(last for _, _, last, _ in names)], default=0)
    return counts, newest_id


_EPOCH = date(1970, 1, 1).toordinal()


def deliveries_after(log_path: Path, after: int, limit: int) -> list[Doc]:
    """Deliveries with an id above `after`, oldest first, at most the newest `limit` (for a reconnecting page)."""
    return read_all(log_path, "callbacks", newest=limit, after=after)


def newest(
    log_path: Path, table: str, limit: int, snapshot: Snapshot | None = None, check: Check | None = None
) -> list[Doc]:
    """The newest `limit` documents of a table, newest first."""
    return list(reversed(read_log(log_path, Filters(limit=limit), table, snapshot, check)))


def jobs_by_task(outbox_path: Path, kind: str, wanted: Mapping[str, Iterable[int]]) -> dict[str, list[Doc]]:
    """The job rows of a kind for several tasks at once: live rows, and archived ones found by delivery ids.

    One pass over the live table and over each archive that can hold one of the deliveries, however many cards
    a page shows.
    """
    found: dict[str, dict[str, Doc]] = {task: {} for task in wanted}
    ids = sorted({i for group in wanted.values() for i in group})
    if not found:
        return {}
    for first, last, archive in job_archives(outbox_path, kind):
        if any(first <= i <= last for i in ids):
            _add_rows(found, read_tinydb(archive).get(kind, {}).values())
    _add_rows(found, read_table(outbox_path, kind).values())  # last: a live row is newer than its archived copy
    return {task: list(rows.values()) for task, rows in found.items()}


def _add_rows(found: dict[str, dict[str, Doc]], rows: Iterable[Any]) -> None:
    for row in rows:
        task = row.get("task_id") if isinstance(row, dict) else None
        if isinstance(task, str) and task in found:
            found[task][str(row.get("key"))] = row
