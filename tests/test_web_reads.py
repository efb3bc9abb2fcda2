"""What the page reads from the log and the outbox, on real TinyDB files: only as much as it needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.errors import StoreError
from relay.web import reads
from tests.family import music

NOW = datetime.now(UTC)


def delivery(n: int, task: str, days_ago: float) -> dict[str, Any]:
    """A stored delivery `days_ago` days old."""
    when = (NOW - timedelta(days=days_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {**music(task=task), "id": n, "task_id": task, "received_at": when}


def write_log(folder: Path, archives: list[list[dict[str, Any]]], live: list[dict[str, Any]]) -> Path:
    """A live file and archive files as rotation leaves them."""
    log = folder / "callbacks.json"
    for docs in archives:
        name = f"callbacks-archive-callbacks-{docs[0]['id']:09d}-{docs[-1]['id']:09d}.json"
        (folder / name).write_text(json.dumps({"callbacks": {str(d["id"]): d for d in docs}}))
    log.write_text(json.dumps({"callbacks": {str(d["id"]): d for d in live}, "rejected": {}}))
    return log


def corrupt(folder: Path, first: int, last: int) -> None:
    """An archive that raises if anything opens it."""
    (folder / f"callbacks-archive-callbacks-{first:09d}-{last:09d}.json").write_text("{not json")


def test_newest_first_gives_each_delivery_once(tmp_path: Path) -> None:
    """Live file first, then archives newest first; a delivery in both (mid-rotation) comes once."""
    old = [delivery(1, "a", 9), delivery(2, "b", 8)]
    newer = [delivery(3, "c", 5), delivery(4, "d", 4)]
    log = write_log(tmp_path, [old, newer], [delivery(4, "d", 4), delivery(5, "e", 1)])
    assert [[d["id"] for d in chunk] for chunk in reads.newest_first(log)] == [[5, 4], [3], [2, 1]]


def test_a_recent_tasks_page_reads_only_back_to_its_span(tmp_path: Path) -> None:
    """A task found recently is read back to two days before it: an archive a month older is never opened."""
    corrupt(tmp_path, 1, 10)
    archived = [delivery(11, "w", 30), delivery(12, "x", 3.5), delivery(13, "t", 3)]
    log = write_log(tmp_path, [archived], [delivery(14, "t", 2.9), delivery(15, "y", 0.1)])
    assert [d["id"] for d in reads.task_deliveries(log, "t")] == [13, 14]
    with pytest.raises(StoreError):
        reads.task_deliveries(log, "t", complete=True)  # the API reads everything, as `relay show` does


def test_an_old_task_is_looked_for_in_the_whole_log(tmp_path: Path) -> None:
    """A task not among the recent deliveries is still found, however far back."""
    log = write_log(tmp_path, [[delivery(1, "old", 300)], [delivery(2, "x", 10)]], [delivery(3, "y", 0)])
    assert [d["id"] for d in reads.task_deliveries(log, "old")] == [1]
    assert reads.task_deliveries(log, "missing") == []


def test_one_delivery_opens_only_the_archive_that_holds_it(tmp_path: Path) -> None:
    """By id: the live file, else the archive whose id range holds it."""
    corrupt(tmp_path, 1, 10)
    log = write_log(tmp_path, [[delivery(11, "a", 5), delivery(12, "b", 4)]], [delivery(13, "c", 0)])
    assert reads.one_delivery(log, 12)["task_id"] == "b"  # type: ignore[index]
    assert reads.one_delivery(log, 13)["task_id"] == "c"  # type: ignore[index]
    assert reads.one_delivery(log, 99) is None


def test_jobs_by_task_reads_live_rows_and_the_archives_that_can_hold_them(tmp_path: Path) -> None:
    """Alert rows for several tasks in one pass; a row both archived and live is given once, the live copy."""
    outbox = tmp_path / "outbox.json"
    archived = {"1": {"key": "a:music:complete", "task_id": "a", "delivery_id": 5, "state": "pending"}}
    (tmp_path / "outbox-archive-alerts-000000005-000000005-000000001.json").write_text(json.dumps({"alerts": archived}))
    (tmp_path / "outbox-archive-alerts-000000001-000000002-000000009.json").write_text("{not json")  # never opened
    live = {
        "1": {"key": "a:music:complete", "task_id": "a", "delivery_id": 5, "state": "sent"},
        "2": {"key": "b:music:failed", "task_id": "b", "delivery_id": 7, "state": "dead"},
        "3": {"key": "z:music:complete", "task_id": "z", "delivery_id": 8, "state": "sent"},
    }
    outbox.write_text(json.dumps({"alerts": live, "meta": {}}))
    found = reads.jobs_by_task(outbox, "alerts", {"a": [5], "b": [7], "c": [9]})
    assert {task: [r["state"] for r in rows] for task, rows in found.items()} == {"a": ["sent"], "b": ["dead"], "c": []}
