"""A TinyDB JSON file that survives kill -9 and power loss, with a cost per write that does not grow.

Stock TinyDB rewrites the whole file in place on every insert: slow as the file grows, and a kill during a write
that shrinks the file leaves it unparseable. Here every change is first appended to a journal beside the file and
fsynced, and only then acknowledged. A committer thread takes whatever changes are queued, appends them in one
write and one fsync (group commit), and hands the result back to the event loop; the loop keeps serving requests
meanwhile, so the disk and the CPU work at the same time.

The TinyDB file itself is rewritten in the background at most `flush_interval` after a change, atomically (temp
file, fsync, rename, fsync of the folder), so it parses at every instant and `jq` or `tinydb.TinyDB(path)` can
read it. Writing it never stops commits: the committer first moves the journal aside (`.journal` becomes
`.journal.old`) and carries on in a fresh one; the snapshot then covers everything in the old journal, which is
deleted once the snapshot is durable. On open, both journals are replayed into memory and kept until the first
snapshot (if that one finds the old journal still there, the current one is appended to it first). One process
writes a given file: a lock file enforces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path

from relay.committer import Committer, Op
from relay.errors import StoreError
from relay.jsonfiles import (
    Doc,
    atomic_write,
    dumps,
    fragment,
    journal_paths,
    probe_writable,
    read_tables,
    remove_stale_temps,
    render_fragments,
)

logger = logging.getLogger("relay.store")


def lock_path(path: Path) -> Path:
    """The lock file that says which process writes `path`."""
    return path.with_name(path.name + ".lock")


def _owned_elsewhere(path: Path) -> str:
    return f"another relay process is writing {path}; stop it first"


def ensure_unlocked(path: Path) -> None:
    """Raise StoreError when another process holds `path`'s lock (checked before relay binds its ports, so the
    real reason comes first); a missing lock file or folder means nobody does."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreError(_owned_elsewhere(path)) from None
    finally:
        os.close(fd)  # closing drops the probe's own lock


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class JournaledDB:
    """TinyDB-format tables kept in memory, made durable through a journal, written out atomically.

    Everything but the committer thread (committer.py) runs on the event loop: the tables change only there.
    """

    def __init__(self, path: Path, tables: tuple[str, ...], flush_interval: float = 1.0) -> None:
        self.path = path
        self.journal_path, self.old_journal_path = journal_paths(path)
        self.flush_interval = flush_interval
        self._commit_error: str | None = None
        self._flush_error: str | None = None
        self._tables: dict[str, dict[int, Doc]] = {t: {} for t in tables}
        # Each document also kept as its fragment of the file, so a snapshot is one join, not a serialization.
        self._frags: dict[str, dict[int, str]] = {t: {} for t in tables}
        self._next_id: dict[str, int] = dict.fromkeys(tables, 1)
        self._version = 0  # counts changes in memory; the file is stale while it differs from _flushed
        self._flushed = 0
        self._lock_fd = -1
        self._committer = Committer(self.journal_path, self.old_journal_path, self._committed)
        self._flush_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None

    @property
    def last_error(self) -> str | None:
        """Why the last commit or snapshot failed, or None while both work."""
        return self._commit_error or self._flush_error

    # -- lifecycle -----------------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock, load the file and replay the journals into memory (they stay until the first snapshot)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(_owned_elsewhere(self.path)) from None
        try:
            for stale in remove_stale_temps(self.path):
                logger.info("removed %s, left by a write that did not finish", stale.name)
            self._tables = read_tables(self.path, tuple(self._tables))
            for name, docs in self._tables.items():
                self._frags[name] = {doc_id: fragment(doc_id, dumps(doc)) for doc_id, doc in docs.items()}
                self._next_id[name] = max(docs, default=0) + 1
            # The journals stay until the first snapshot has folded them in (the maintainer writes it within
            # flush_interval): starting needs no more free space than an append, so a full disk cannot keep
            # relay from starting (and answering 503 until space returns).
            if self.old_journal_path.exists() or _size(self.journal_path):
                self._version += 1
            if not self.path.exists():  # readers (jq, TinyDB) expect the file; an empty one is a few bytes
                atomic_write(self.path, render_fragments({name: {} for name in self._tables}))
            self._committer.open_journal()
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc

    async def start(self) -> None:
        """Start the committer thread and the task that keeps the TinyDB file current."""
        self._committer.start()
        self._maintainer = asyncio.create_task(self._maintain(), name=f"flush:{self.path.name}")

    async def close(self) -> None:
        """Commit what is queued, write the file a last time and release the lock."""
        self._closed.set()
        if self._maintainer is not None:
            await self._maintainer
        await self._committer.stop()
        with contextlib.suppress(StoreError):  # logged; the journals are replayed on the next open
            await self.flush()
        self._committer.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- reading -------------------------------------------------------------------------------------------

    def table(self, name: str) -> dict[int, Doc]:
        """The committed documents of a table, oldest first. Do not mutate."""
        return self._tables[name]

    def fragments(self, name: str) -> dict[int, str]:
        """The committed documents of a table as fragments of a TinyDB file (see `fragment`). Do not mutate."""
        return self._frags[name]

    def continue_ids_after(self, name: str, last: int) -> None:
        """Make new ids of `name` follow `last` (ids of documents already moved elsewhere)."""
        self._next_id[name] = max(self._next_id[name], last + 1)

    def next_id(self, name: str) -> int:
        """The id the next document of `name` will get."""
        return self._next_id[name]

    # -- writing -------------------------------------------------------------------------------------------

    def put_nowait(self, table: str, doc: Doc, doc_id: int | None = None) -> asyncio.Future[int]:
        """Queue an insert (or a replace, with `doc_id`); the future resolves once it is fsynced."""
        if doc_id is None:
            doc_id = self._next_id[table]
        self._next_id[table] = max(self._next_id[table], doc_id + 1)
        text = dumps(doc)  # serialize here: a value that is not strict JSON fails its own request only
        return self._enqueue(Op(table, doc_id, doc, text, asyncio.get_running_loop().create_future()))

    async def put(self, table: str, doc: Doc, doc_id: int | None = None) -> int:
        """Insert or replace a document; returns its id once it is durable."""
        return await self.put_nowait(table, doc, doc_id)

    async def delete(self, table: str, doc_id: int) -> None:
        """Remove a document durably."""
        await self._enqueue(Op(table, doc_id, None, None, asyncio.get_running_loop().create_future()))

    def drop_from_memory(self, table: str, doc_ids: list[int]) -> None:
        """Forget documents that were moved to another file; the next snapshot no longer holds them."""
        for doc_id in doc_ids:
            self._tables[table].pop(doc_id, None)
            self._frags[table].pop(doc_id, None)
        self._version += 1

    async def flush(self) -> None:
        """Write the TinyDB file now; everything committed before the call is in it afterwards."""
        async with self._flush_lock:
            await self._committer.cut()
            version = self._version
            snapshot = {name: dict(frags) for name, frags in self._frags.items()}
            try:
                await asyncio.to_thread(self._write_snapshot, snapshot)
            except OSError as exc:
                self._flush_error = f"cannot write {self.path}: {exc.strerror or exc}"
                logger.error("%s", self._flush_error)
                raise StoreError(self._flush_error) from exc
            self._flush_error = None
            self._flushed = version

    def _enqueue(self, op: Op) -> asyncio.Future[int]:
        if not self._committer.submit(op):
            op.future.set_exception(StoreError(f"{self.path.name} is closed"))
        return op.future

    def _write_snapshot(self, snapshot: dict[str, dict[int, str]]) -> None:
        atomic_write(self.path, render_fragments(snapshot))
        # Not fsynced: if the deletion is lost, replaying the old journal onto the newer file changes nothing.
        self.old_journal_path.unlink(missing_ok=True)

    async def _maintain(self) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.flush_interval)
            if self._commit_error is not None and not self._closed.is_set():
                await self._probe()
            if self._version != self._flushed and not self._closed.is_set():
                with contextlib.suppress(StoreError):  # reported in last_error; tried again next interval
                    await self.flush()

    async def _probe(self) -> None:
        # A failed commit is otherwise only cleared by the next one: /healthz would say 503 until a callback came.
        try:
            await asyncio.to_thread(probe_writable, self.journal_path)
        except OSError:
            return
        logger.info("%s can be written again", self.journal_path.name)
        self._commit_error = None

    # -- back on the loop ----------------------------------------------------------------------------------

    def _committed(self, batch: list[Op], error: str | None) -> None:
        if error is not None:
            self._commit_error = error
            logger.error("%s", error)
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(StoreError(error))
            return
        self._commit_error = None
        for op in batch:
            if op.doc is None:
                self._tables[op.table].pop(op.doc_id, None)
                self._frags[op.table].pop(op.doc_id, None)
            else:
                self._tables[op.table][op.doc_id] = op.doc
                assert op.text is not None
                self._frags[op.table][op.doc_id] = fragment(op.doc_id, op.text)
            if not op.future.done():
                op.future.set_result(op.doc_id)
        self._version += 1
