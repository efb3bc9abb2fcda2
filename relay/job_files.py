"""Finished jobs leave memory and the live `outbox.json` for archive files beside it, the way deliveries rotate.

`outbox-archive-<kind>-<first delivery id>-<last delivery id>-<first job id>.json` is a TinyDB file holding one
table, `<kind>`. Naming archives by the deliveries their jobs came from lets a task's view open only the archives
that can hold its jobs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relay.jsonfiles import Doc, atomic_write, read_table, read_tinydb, render_fragments

#: Finished rows of each kind kept in the live file (the rest are archived once there are twice as many).
KEEP_FINISHED = 500


def _pattern(path: Path) -> re.Pattern[str]:
    return re.compile(re.escape(path.stem) + r"-archive-(\w+)-(\d+)-(\d+)-(\d+)\.json")


def job_archives(path: Path, kind: str) -> list[tuple[int, int, Path]]:
    """The archives of one kind, oldest first, as (first delivery id, last delivery id, path)."""
    pattern = _pattern(path)
    found = []
    with contextlib.suppress(FileNotFoundError):
        # Names, not Paths: the folder also holds the log's archives, a thousand of them at a million deliveries,
        # and a task view lists it for each kind.
        for name in os.listdir(path.parent):  # noqa: PTH208
            match = pattern.fullmatch(name)
            if match and match[1] == kind:
                found.append((int(match[4]), int(match[2]), int(match[3]), name))
    return [(first, last, path.with_name(name)) for _, first, last, name in sorted(found)]


def archive_finished(path: Path, kind: str, frags: dict[int, str], rows: list[Doc]) -> Path:
    """Write finished rows (as their TinyDB fragments) to a new archive file, durably."""
    ids = [r["delivery_id"] for r in rows if isinstance(r.get("delivery_id"), int)]
    first, last = (min(ids), max(ids)) if ids else (0, 0)
    name = f"{path.stem}-archive-{kind}-{first:09d}-{last:09d}-{min(frags):09d}.json"
    target = path.with_name(name)
    atomic_write(target, render_fragments({kind: frags}))
    return target


def recent_keys(path: Path, kind: str, live: dict[int, Doc], limit: int) -> list[str]:
    """The keys of the newest `limit` jobs of a kind, oldest first: the live rows, then archives newest first."""
    chunks = [[row["key"] for row in live.values()]]
    kept = len(chunks[0])
    for _, _, archive in reversed(job_archives(path, kind)):
        if kept >= limit:
            break
        chunk = [row.get("key") for row in read_tinydb(archive).get(kind, {}).values()]
        chunks.insert(0, [k for k in chunk if isinstance(k, str)])
        kept += len(chunks[0])
    return [key for chunk in chunks for key in chunk][-limit:]


def archived_for_task(path: Path, kind: str, task_id: str, delivery_ids: Iterable[int]) -> list[dict[str, Any]]:
    """A task's finished jobs of a kind from the archives that can hold them (by its deliveries' ids)."""
    wanted = sorted(set(delivery_ids))
    found: list[dict[str, Any]] = []
    if not wanted:
        return found
    for first, last, archive in job_archives(path, kind):
        if any(first <= d <= last for d in wanted):
            rows = read_tinydb(archive).get(kind, {}).values()
            found.extend(row for row in rows if row.get("task_id") == task_id)
    return found


def jobs_for_task(path: Path, kind: str, task_id: str, delivery_ids: Iterable[int]) -> list[dict[str, Any]]:
    """A task's jobs of a kind, archived and live, oldest first (for readers outside the running relay)."""
    live = [row for row in read_table(path, kind).values() if row.get("task_id") == task_id]
    return [*archived_for_task(path, kind, task_id, delivery_ids), *live]
