"""The journaled TinyDB file in-process, on real files: commits during snapshots, replay, readers' view.

The crash-safety of the whole process (kill -9 under load) is tested in test_service.py; these pin the
mechanics a kill can land in the middle of.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import tinydb

from relay.journal import JournaledDB
from relay.jsonfiles import atomic_write, journal_paths, read_table, temp_path


def test_commits_go_on_while_the_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "log.json"

    async def scenario() -> None:
        db = JournaledDB(path, ("items",), flush_interval=0.01)
        db.open()
        await db.start()
        # Many small groups, so some commit while a snapshot is being written and the journal is moved aside.
        for group in range(40):
            await asyncio.gather(*(db.put("items", {"n": group * 10 + i}) for i in range(10)))
            on_disk = read_table(path, "items")
            assert len(on_disk) == (group + 1) * 10, "a reader lost committed documents"
        await db.close()

    asyncio.run(scenario())
    current, older = journal_paths(path)
    assert not older.exists()
    assert not current.exists() or current.stat().st_size == 0
    with tinydb.TinyDB(path) as db:
        assert sorted(doc["n"] for doc in db.table("items").all()) == list(range(400))


def test_both_journals_are_replayed_on_open(tmp_path: Path) -> None:
    """A crash after the journal was moved aside but before the snapshot: old, then current, onto the file."""
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"items": {"1": {"v": "file"}, "2": {"v": "file"}, "3": {"v": "file"}}}))
    current, older = journal_paths(path)
    older.write_text(
        '{"t":"items","id":1,"doc":{"v":"old"}}\n{"t":"items","id":2,"del":true}\n{"t":"items","id":4,"doc":{"v":"old"}}\n'
    )
    current.write_text('{"t":"items","id":4,"doc":{"v":"current"}}\n{"t":"items","id":5,"doc":{"v":"torn"')
    expected = {1: {"v": "old"}, 3: {"v": "file"}, 4: {"v": "current"}}
    assert read_table(path, "items") == expected  # what `relay log` sees while relay is down

    async def scenario() -> None:
        db = JournaledDB(path, ("items",))
        db.open()
        assert db.table("items") == expected
        assert db.next_id("items") == 5
        await db.start()
        await db.close()

    asyncio.run(scenario())
    assert not older.exists()
    assert json.loads(path.read_text())["items"] == {"1": {"v": "old"}, "3": {"v": "file"}, "4": {"v": "current"}}


def test_a_closed_log_refuses_writes(tmp_path: Path) -> None:
    async def scenario() -> str:
        db = JournaledDB(tmp_path / "log.json", ("items",))
        db.open()
        await db.start()
        await db.close()
        try:
            await db.put("items", {"late": True})
        except Exception as exc:
            return str(exc)
        return "accepted"

    assert "closed" in asyncio.run(scenario())


def test_open_rewrites_nothing_and_cuts_a_torn_append(tmp_path: Path) -> None:
    """Starting needs no more space than an append: the file is not rewritten, the journals stay until the first
    snapshot, and a torn last line is cut off so the next append is not glued to it."""
    path = tmp_path / "log.json"
    original = json.dumps({"items": {"1": {"v": "file"}}})
    path.write_text(original)
    current, older = journal_paths(path)
    current.write_text('{"t":"items","id":2,"doc":{"v":"journal"}}\n{"t":"items","id":3,"doc":{"v":"to')

    async def scenario() -> None:
        db = JournaledDB(path, ("items",), flush_interval=3600)
        db.open()
        assert path.read_text() == original
        assert current.read_text() == '{"t":"items","id":2,"doc":{"v":"journal"}}\n'
        await db.start()
        await db.put("items", {"v": "after"})
        assert read_table(path, "items") == {1: {"v": "file"}, 2: {"v": "journal"}, 3: {"v": "after"}}
        await db.close()

    asyncio.run(scenario())
    assert not older.exists()
    assert json.loads(path.read_text())["items"] == {"1": {"v": "file"}, "2": {"v": "journal"}, "3": {"v": "after"}}


def test_a_journal_left_from_before_a_start_never_replays_onto_newer_snapshots(tmp_path: Path) -> None:
    """Both journals left by a crash: the first snapshot folds both in, so a document dropped afterwards (moved to
    an archive) does not come back from a journal on the next start."""
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"items": {"1": {"v": "file"}}}))
    current, older = journal_paths(path)
    older.write_text('{"t":"items","id":2,"doc":{"v":"old"}}\n')
    current.write_text('{"t":"items","id":3,"doc":{"v":"current"}}\n')

    async def scenario() -> None:
        db = JournaledDB(path, ("items",), flush_interval=3600)
        db.open()
        await db.start()
        db.drop_from_memory("items", [3])
        await db.flush()
        assert read_table(path, "items") == {1: {"v": "file"}, 2: {"v": "old"}}  # what a start after a crash sees
        await db.close()

    asyncio.run(scenario())
    assert read_table(path, "items") == {1: {"v": "file"}, 2: {"v": "old"}}


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """A write that fails (here the rename; on a full disk the write) removes its temp file, which would
    otherwise hold on to the space the next write needs."""
    target = tmp_path / "log.json"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(IsADirectoryError):
        atomic_write(target, b"{}" * 1000)
    assert not temp_path(target).exists()


def test_open_removes_temp_files_a_crash_left(tmp_path: Path) -> None:
    """Temp files of the file and of its archives, left by a kill mid-write, are deleted when the log opens."""
    path = tmp_path / "log.json"
    stale = [temp_path(path), tmp_path / ".log-archive-items-000000001-000000010.json.tmp"]
    for leftover in stale:
        leftover.write_bytes(b"\0" * 4096)
    unrelated = tmp_path / ".other.json.tmp"
    unrelated.write_text("not relay's")

    async def scenario() -> None:
        db = JournaledDB(path, ("items",))
        db.open()
        await db.start()
        await db.close()

    asyncio.run(scenario())
    assert not any(leftover.exists() for leftover in stale)
    assert unrelated.exists()
