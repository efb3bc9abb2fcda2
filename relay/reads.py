"""Reading deliveries back, for the CLI and the admin app: the live file, then the archives through the read index.

`read_log` answers what `select` over every document would, at the cost of the answer: a task's documents come
from the task index, `since` skips archives whose last arrival is older, `limit` stops at the first archive that
cannot hold a newer match, and an archive is opened only for the documents the index points at. Archives the
index does not know yet are read in full, so an answer is never short, only slower, while the index catches up.
Archives never change once written (the index checks each one's size and mtime at every start, and a file that is
not the size it was when indexed is read in full when opened), so a read lists them but does not stat them all.
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.jsonfiles import Doc, read_table, read_tinydb
from relay.log_index import Indexed, IndexReader, Location
from relay.query import Filters, cutoff, matches, newest
from relay.store import Snapshot, archive_names


class ReadCancelled(Exception):
    """Raised by a `check` callback to end a read early (it ran out of time)."""


@dataclass
class _Read:
    """One read in progress: what it looks for, and where."""

    folder: Path
    table: str
    filters: Filters
    since: datetime | None
    after: float | None  # `since` as Unix time, as the index keeps arrivals
    index: IndexReader | None
    known: Mapping[str, Indexed]  # the archives the index holds; empty when there is no usable index
    check: Callable[[], None] | None

    def whole(self, name: str) -> dict[int, Doc]:
        """The matching documents of an archive the index cannot vouch for, read in full."""
        docs = read_tinydb(self.folder / name).get(self.table, {})
        return {doc_id: doc for doc_id, doc in docs.items() if matches(doc, self.filters, self.since)}

    def fetch(self, name: str, where: list[Location]) -> dict[int, Doc]:
        """The documents at `where` in an indexed archive, one read each; the whole file when the index is off."""
        docs: dict[int, Doc] = {}
        try:
            with (self.folder / name).open("rb") as file:
                if os.fstat(file.fileno()).st_size != self.known[name].size:
                    return self.whole(name)  # not the file that was indexed
                for doc_id, start, length in where:
                    doc = read_at(file.fileno(), start, length)
                    if doc is None or doc.get("id", doc_id) != doc_id:
                        return self.whole(name)
                    if matches(doc, self.filters, self.since):  # the index narrows; the document decides
                        docs[doc_id] = doc
        except FileNotFoundError:
            return {}  # pruned since the listing: retention removed it on purpose
        return docs


def read_log(
    log_path: Path,
    filters: Filters,
    table: str = "callbacks",
    snapshot: Snapshot | None = None,
    check: Callable[[], None] | None = None,
) -> list[Doc]:
    """The documents of `table` that match `filters`, oldest first, the newest `filters.limit` of them.

    `snapshot` is what relay itself holds in memory (the live table, the archives, what the index holds); without
    it the live file and its journals are read, the folder listed and the index asked. `check` is called between
    archives and may raise to stop the read.
    """
    since = cutoff(filters)
    # The live documents first, then the archives: a rotation meanwhile can only show a document twice (merged by
    # id), never hide it, because rotation deletes from the live file only once the archive is durable.
    current: Mapping[int, Doc] = read_table(log_path, table) if snapshot is None else snapshot.live
    found = {doc_id: doc for doc_id, doc in current.items() if matches(doc, filters, since)}
    on_disk = archive_names(log_path, table) if snapshot is None else snapshot.archives
    index = IndexReader.open(log_path) if on_disk else None
    known: Mapping[str, Indexed] = {}
    if index is not None:
        known = _known(index, table) if snapshot is None else snapshot.indexed
    try:
        read = _Read(
            log_path.parent,
            table,
            filters,
            since,
            since.timestamp() if since is not None else None,
            index,
            known,
            check,
        )
        if filters.task is not None:
            _read_task(read, found, on_disk)
        else:
            _read_newest(read, found, on_disk)
    finally:
        if index is not None:
            index.close()
    return newest([found[doc_id] for doc_id in sorted(found)], filters.limit)


def _known(index: IndexReader, table: str) -> dict[str, Indexed]:
    try:
        return index.archives(table)
    except sqlite3.Error:
        return {}  # unusable (being rebuilt): every archive is read in full


def _read_task(read: _Read, found: dict[int, Doc], on_disk: list[tuple[str, int, int, str]]) -> None:
    """One probe of the task index for every indexed archive; the others are read in full."""
    located: dict[int, list[Location]] = {}
    if read.index is not None and read.known:
        try:
            located = read.index.by_task(read.filters, read.after)
        except sqlite3.Error:
            read.known = {}
    for _, _, _, name in reversed(on_disk):
        entry = read.known.get(name)
        if entry is not None and entry.id not in located:
            continue
        if read.check is not None:
            read.check()
        docs = read.whole(name) if entry is None else read.fetch(name, located[entry.id])
        for doc_id, doc in docs.items():
            found.setdefault(doc_id, doc)


def _read_newest(read: _Read, found: dict[int, Doc], on_disk: list[tuple[str, int, int, str]]) -> None:
    """Archives newest first, until the matches found fill `limit` with ids newer than the next archive's."""
    limit = read.filters.limit
    live_ids = sorted(found)
    from_archives = 0  # matches added from archives, all newer than any archive still to come
    for _, _, last, name in reversed(on_disk):
        if limit is not None and len(live_ids) - bisect.bisect_right(live_ids, last) + from_archives >= limit:
            break
        entry = read.known.get(name)
        if entry is not None and read.after is not None and entry.last_at is not None and entry.last_at < read.after:
            continue  # the time index: nothing in this archive arrived late enough
        if read.check is not None:
            read.check()
        docs = None
        if entry is not None and read.index is not None:
            try:
                docs = read.fetch(name, read.index.in_archive(entry.id, read.filters, read.after, limit))
            except sqlite3.Error:
                docs = None
        if docs is None:
            docs = read.whole(name)
        for doc_id, doc in docs.items():
            if doc_id not in found:
                found[doc_id] = doc
                from_archives += 1


def read_at(fd: int, start: int | None, length: int | None) -> Doc | None:
    """The document at a byte range of an open file, or None when it is not one there."""
    if start is None or length is None:
        return None
    try:
        doc = json.loads(os.pread(fd, length, start))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
