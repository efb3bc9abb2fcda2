"""Reading the log through its read index, in-process on real files: same answers as reading everything, at the
cost of the answer (proved by making every file the answer does not need unreadable), whatever state the index is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.errors import StoreError
from relay.indexer import Indexer, IndexWriter, Row, scan_archive
from relay.jsonfiles import dumps, fragment, fragment_offsets, locate_documents, read_table, render_fragments
from relay.log_index import IndexReader, index_path, unindexed
from relay.query import Filters, select
from relay.reads import read_log
from relay.store import DeliveryStore, Snapshot, archive_names, archives, read_all

PER_ARCHIVE = 20
ARCHIVED = 100  # ids 1..100 in five archives, 101..120 in the live file
NOW = datetime.now(UTC)


def doc_for(doc_id: int) -> dict[str, Any]:
    """A delivery whose fields vary with its id: tasks, stages, outcomes, arrival two hours apart, a few oddities."""
    received = NOW - timedelta(hours=241 - 2 * doc_id)
    task: Any = f"t{doc_id % 7}"
    if doc_id % 11 == 0:
        task = None
    if doc_id == 13:
        task = 12345  # not a string: never matches the task "12345"
    if doc_id in (45, 47):
        task = "rare"
    return {
        "id": doc_id,
        "received_at": "garbage" if doc_id == 33 else received.isoformat().replace("+00:00", "Z"),
        "task_id": task,
        "stage": ["text", "first", "complete", "error", None][doc_id % 5],
        "ok": [True, False, None][doc_id % 3],
        "title": f"Song {doc_id} ✓",
    }


def write_archive(folder: Path, table: str, ids: range, docs: dict[int, dict[str, Any]] | None = None) -> Path:
    """An archive file as rotation writes it."""
    frags = {i: fragment(i, dumps((docs or {}).get(i) or doc_for(i))) for i in ids}
    path = folder / f"callbacks-archive-{table}-{ids[0]:09d}-{ids[-1]:09d}.json"
    path.write_bytes(render_fragments({table: frags}))
    return path


def build_log(folder: Path) -> Path:
    """A log of 120 deliveries (100 archived in five files, 20 live) and 30 rejected requests (20 archived)."""
    path = folder / "callbacks.json"
    for first in range(1, ARCHIVED + 1, PER_ARCHIVE):
        write_archive(folder, "callbacks", range(first, first + PER_ARCHIVE))
    write_archive(folder, "rejected", range(1, 21))
    live = {i: fragment(i, dumps(doc_for(i))) for i in range(ARCHIVED + 1, 121)}
    rejected = {i: fragment(i, dumps(doc_for(i))) for i in range(21, 31)}
    path.write_bytes(render_fragments({"callbacks": live, "rejected": rejected}))
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """The log of build_log, not indexed."""
    return build_log(tmp_path)


def index_everything(log: Path) -> None:
    """What relay does at start: index every archive on disk."""
    writer = IndexWriter(log)
    writer.reconcile(archives(log))
    writer.close()


def make_half_indexed(log: Path) -> None:
    index_everything(log)
    writer = IndexWriter(log)
    writer.forget([path.name for *_, path in archives(log)][1:3])
    writer.close()


def make_stale(log: Path) -> None:
    index_everything(log)
    archives(log, "callbacks")[2][3].unlink()  # retention removed it; the index still lists it


def make_damaged(log: Path) -> None:
    index_path(log).write_bytes(b"this is not a database" * 100)


def make_replaced(log: Path) -> None:
    index_everything(log)
    changed = {i: {**doc_for(i), "task_id": "t3" if i % 2 else "new", "stage": "complete"} for i in range(41, 61)}
    write_archive(log.parent, "callbacks", range(41, 61), changed)  # same name, other content
    index_everything(log)  # relay's next start notices (size and mtime) and indexes it again


STATES = {
    "indexed": index_everything,
    "no-index": lambda log: None,
    "half-indexed": make_half_indexed,
    "pruned-since-indexed": make_stale,
    "damaged-index": make_damaged,
    "archive-replaced-then-restart": make_replaced,
}

FILTERS = {
    "everything": Filters(),
    "newest-5": Filters(limit=5),
    "newest-25": Filters(limit=25),
    "newest-0": Filters(limit=0),
    "newest-500": Filters(limit=500),
    "task": Filters(task="t3"),
    "task-newest-2": Filters(task="t3", limit=2),
    "task-stage": Filters(task="t3", stage="complete"),
    "task-failed-since": Filters(task="t2", failed=True, since=timedelta(days=6)),
    "task-rare": Filters(task="rare"),
    "task-unknown": Filters(task="nobody"),
    "task-only-in-replaced-archive": Filters(task="new"),
    "task-not-a-string": Filters(task="12345"),
    "stage": Filters(stage="first"),
    "failed": Filters(failed=True),
    "failed-newest-3": Filters(failed=True, limit=3),
    "since-3d": Filters(since=timedelta(days=3)),
    "since-3d-newest-4": Filters(since=timedelta(days=3), limit=4),
    "since-7d-stage": Filters(since=timedelta(days=7), stage="error"),
}


def held_in_memory(log: Path, table: str) -> Snapshot:
    """What a relay running on `log` would hold: its live table, the archives, what the index has committed."""
    reader = IndexReader.open(log)
    indexed = {}
    if reader is not None:
        with contextlib.suppress(sqlite3.Error):
            indexed = reader.archives(table)
        reader.close()
    return Snapshot(read_table(log, table), archive_names(log, table), indexed)


@pytest.fixture(scope="module", params=list(STATES), ids=list(STATES))
def log_in_state(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The log of build_log with its index in each state in turn (built once per state: the reads only read)."""
    log = build_log(tmp_path_factory.mktemp(request.param))
    STATES[request.param](log)
    return log


@pytest.mark.parametrize("source", ["files", "memory"])
@pytest.mark.parametrize("filters", list(FILTERS.values()), ids=list(FILTERS))
def test_read_log_answers_as_reading_everything(log_in_state: Path, filters: Filters, source: str) -> None:
    """Whatever the state of the index, read_log returns what select() over every document returns, reading the
    files as the CLI does or from what relay holds in memory."""
    log = log_in_state
    for table in ("callbacks", "rejected"):
        snapshot = held_in_memory(log, table) if source == "memory" else None
        assert read_log(log, filters, table, snapshot) == select(read_all(log, table), filters), table


def test_what_relay_holds_is_used_instead_of_the_files(log: Path) -> None:
    """relay passes its live table and archive list; the live file is then not read, nor the folder listed."""
    index_everything(log)
    snapshot = held_in_memory(log, "callbacks")
    expected = read_log(log, Filters(task="t3"))
    log.write_text("not json")
    write_archive(log.parent, "callbacks", range(121, 141))  # not in relay's list: not read
    assert read_log(log, Filters(task="t3"), snapshot=snapshot) == expected


def spoil_all_but(log: Path, keep: set[int]) -> None:
    """Overwrite every callbacks archive whose first id is not in `keep` with blanks of the same size."""
    for _, first, _, path in archives(log, "callbacks"):
        if first not in keep:
            path.write_bytes(b" " * path.stat().st_size)


COSTS = {
    # filters, first ids of the archives the answer needs, how many documents it holds
    "task-in-one-archive": (Filters(task="rare"), {41}, 2),
    "newest-within-the-live-file": (Filters(limit=5), set(), 5),
    "newest-reaching-one-archive": (Filters(limit=25), {81}, 25),
    "since-within-two-archives": (Filters(since=timedelta(hours=70)), {61, 81}, 35),
    "failed-newest-within-one-archive": (Filters(failed=True, limit=9), {81}, 9),
}


@pytest.mark.parametrize(("filters", "needed", "count"), list(COSTS.values()), ids=list(COSTS))
def test_an_answer_opens_only_the_archives_that_hold_it(
    log: Path, filters: Filters, needed: set[int], count: int
) -> None:
    """With the index built, archives that cannot hold the answer are not read at all."""
    index_everything(log)
    expected = read_log(log, filters)
    assert len(expected) == count
    spoil_all_but(log, needed)
    assert read_log(log, filters) == expected
    with pytest.raises(StoreError):  # the spoiled archives would have been noticed, had they been read
        read_log(log, Filters())


def test_reconcile_indexes_once_and_follows_the_archives(log: Path) -> None:
    """A rebuild indexes each archive once; later only new or changed archives, and gone ones are forgotten."""
    writer = IndexWriter(log)
    assert writer.reconcile(archives(log)) == 6
    assert writer.reconcile(archives(log)) == 0
    write_archive(log.parent, "callbacks", range(101, 121))
    assert writer.reconcile(archives(log)) == 1
    archives(log)[0][3].unlink()
    assert writer.reconcile(archives(log)) == 0
    assert len(writer.known()) == 6
    writer.close()
    assert unindexed(log, archives(log)) == []
    assert index_path(log).stat().st_mode & 0o077 == 0


def test_a_damaged_index_is_rebuilt_in_the_background(log: Path) -> None:
    """relay's indexer replaces an index it cannot use, rebuilt from the archives, without being awaited."""
    make_damaged(log)
    assert len(unindexed(log, archives(log))) == 6

    async def scenario() -> None:
        indexer = Indexer(log, lambda: archives(log))
        indexer.start()
        await indexer.idle()
        await indexer.close()

    asyncio.run(scenario())
    assert unindexed(log, archives(log)) == []


def test_rotation_indexes_each_archive_it_writes(tmp_path: Path) -> None:
    """Archives written by rotation are in the index, at the places the documents really are."""
    path = tmp_path / "callbacks.json"

    async def scenario() -> None:
        store = DeliveryStore(path, rotate_records=5)
        await store.open()
        for n in range(40):
            await store.record({"task_id": f"r{n % 4}", "stage": "complete", "ok": True, "received_at": "x"})
            if store._rotation is not None:
                await store._rotation
        await store.indexer.idle()
        await store.close()

    asyncio.run(scenario())
    on_disk = archives(path)
    assert len(on_disk) >= 3
    assert unindexed(path, on_disk) == []
    for table, _, _, archive in on_disk:
        assert scan_archive(archive, table)[0] == _indexed_rows(path, archive.name)
    assert read_log(path, Filters(task="r1")) == select(read_all(path), Filters(task="r1"))


def _indexed_rows(log: Path, name: str) -> list[Any]:
    with sqlite3.connect(index_path(log)) as db:
        rows = db.execute(
            "SELECT doc_id, start, length, task_id, received, stage, ok FROM docs"
            " WHERE archive = (SELECT id FROM archives WHERE name = ?) ORDER BY doc_id",
            (name,),
        ).fetchall()
    return [Row(*r) for r in rows]


DOCUMENTS = {
    "tinydb-pretty": json.dumps({"_default": {}, "callbacks": {"1": {"a": 1}, "2": {"b": [1, {"c": "}"}]}}}, indent=2),
    "compact": '{"callbacks":{"3":{"a":"\\u00e9"},"4":{}}}',
    "other-tables-around": '{"rejected": {"1": {"x": 1}}, "callbacks": {"5": {"y": 2}}, "z": [1]}',
    "empty-table": '{"callbacks": {}}',
    "no-table": '{"rejected": {"1": {}}}',
    "empty-file-object": " { } ",
    "non-document-values": '{"callbacks": {"6": 5, "x": {}, "7": {"ok": true}}}',
}


@pytest.mark.parametrize("text", list(DOCUMENTS.values()), ids=list(DOCUMENTS))
def test_locate_documents_finds_what_json_loads_finds(text: str) -> None:
    """Each document comes with the exact span of text it was parsed from."""
    located = list(locate_documents(text, "callbacks"))
    table = json.loads(text).get("callbacks", {})
    expected = {int(k): v for k, v in table.items() if k.isdigit() and isinstance(v, dict)}
    assert {i: doc for i, _, _, doc in located} == expected
    for _, start, end, doc in located:
        assert json.loads(text[start:end]) == doc


BROKEN = {
    "missing-comma": '{"callbacks": {"1": {"a": 1} "2": {}}}',
    "trailing-comma": '{"callbacks": {"1": {"a": 1},}}',
    "not-an-object": "[1, 2]",
    "truncated": '{"callbacks": {"1": {"a": ',
    "blank": "    ",
}


@pytest.mark.parametrize("text", list(BROKEN.values()), ids=list(BROKEN))
def test_locate_documents_refuses_what_json_loads_refuses(text: str) -> None:
    """A damaged file is an error, not a short list."""
    with pytest.raises(ValueError, match=r"(?i)expect"):
        list(locate_documents(text, "callbacks"))


def test_fragment_offsets_point_at_each_document() -> None:
    """The offsets computed while rotating are where the scanner finds each document in the written file."""
    frags = {i: fragment(i, dumps({"id": i, "text": "é" * i, "nested": {"}": [i]}})) for i in (7, 8, 100, 12345)}
    data = render_fragments({"callbacks": frags})
    located = {i: (start, end - start) for i, start, end, _ in locate_documents(data.decode(), "callbacks")}
    assert fragment_offsets("callbacks", frags) == located


@pytest.mark.parametrize("source", ["files", "memory"])
@pytest.mark.parametrize("days", [3, 7, 30], ids=["3-days", "7-days", "30-days"])
def test_the_charts_counts_come_from_the_index_as_from_the_log(log: Path, days: int, source: str) -> None:
    """Deliveries per day and outcome, summed by the index, are what counting every delivery gives."""
    from relay.web import chart
    from relay.web import reads as page_reads

    since = (NOW - timedelta(days=days)).date()
    assert page_reads.daily_outcomes(log, since) is None  # not indexed: the caller reads the log instead
    index_everything(log)
    write_archive(log.parent, "callbacks", range(121, 141))  # rotated a moment ago: not indexed yet
    expected = chart.tally(page_reads.newest_first(log), since, limit=10**9)
    snapshot = held_in_memory(log, "callbacks") if source == "memory" else None
    assert page_reads.daily_outcomes(log, since, snapshot) == expected


def test_a_task_page_goes_through_the_index_while_the_newest_archive_is_not_indexed_yet(log: Path) -> None:
    """The archive rotation has just written is read in full; the others only where the task index points."""
    from relay.web import reads as page_reads

    index_everything(log)
    write_archive(log.parent, "callbacks", range(121, 141))
    expected = select(read_all(log), Filters(task="rare"))
    assert expected
    spoil_all_but(log, {41, 121})
    assert page_reads.task_deliveries(log, "rare") == expected
