"""Where the page's data comes from: plain functions over the log and the job queue's files, run in a thread.

They read what the CLI reads (journal, live file, archives) and never touch the running relay's memory, so they
are safe off the event loop. The read-path indexes replace their insides without changing their signatures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from relay.job_files import job_archives
from relay.jsonfiles import Doc, read_table, read_tinydb
from relay.query import Filters, select
from relay.store import archives, parse_iso, read_all

#: How far back beyond a task's oldest delivery found its page still looks (see task_deliveries).
TASK_SPAN = timedelta(days=2)


def newest_first(log_path: Path, table: str = "callbacks") -> Iterator[list[Doc]]:
    """Deliveries in chunks, newest first: the live file (with its journal), then each archive, newest first.

    A document seen twice (a rotation meanwhile writes it to an archive before dropping it from the live file)
    is given once.
    """
    seen: set[int] = set()
    live = read_table(log_path, table)
    seen.update(live)
    yield [live[k] for k in sorted(live, reverse=True)]
    for _, _, _, archive in reversed(archives(log_path, table)):
        docs = read_tinydb(archive).get(table, {})
        fresh = [docs[k] for k in sorted(docs, reverse=True) if k not in seen]
        seen.update(docs)
        yield fresh


def task_deliveries(log_path: Path, task_id: str, complete: bool = False) -> list[Doc]:
    """Every delivery of one task, oldest first.

    Read newest first, and (unless `complete`) only until the log is `TASK_SPAN` older than the oldest delivery
    found: a task's deliveries come within minutes of each other (the provider retries for 21 minutes, a watched
    task is given up after a day), so a recent task's page does not read a year of archives. A task not found
    there is looked for in the whole log.
    """
    if complete:
        return select(read_all(log_path), Filters(task=task_id))
    found: list[Doc] = []
    oldest: datetime | None = None
    for chunk in newest_first(log_path):
        for doc in chunk:
            if doc.get("task_id") == task_id:
                found.append(doc)
                oldest = parse_iso(doc.get("received_at")) or oldest
        last = parse_iso(chunk[-1].get("received_at")) if chunk else None
        if oldest is not None and last is not None and last < oldest - TASK_SPAN:
            break
    return sorted(found, key=lambda d: int(d.get("id") or 0))


def one_delivery(log_path: Path, delivery_id: int) -> Doc | None:
    """One delivery by id, or None: from the live file, else from the one archive whose id range holds it."""
    live = read_table(log_path, "callbacks")
    if delivery_id in live:
        return live[delivery_id]
    for _, first, last, archive in archives(log_path, "callbacks"):
        if first <= delivery_id <= last:
            return read_tinydb(archive).get("callbacks", {}).get(delivery_id)
    return None


def deliveries_after(log_path: Path, after: int, limit: int) -> list[Doc]:
    """Deliveries with an id above `after`, oldest first, at most the newest `limit` (for a reconnecting page)."""
    return read_all(log_path, "callbacks", newest=limit, after=after)


def newest(log_path: Path, table: str, limit: int) -> list[Doc]:
    """The newest `limit` documents of a table, newest first."""
    return list(reversed(read_all(log_path, table, newest=limit)))


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
