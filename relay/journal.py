"""A TinyDB JSON file that survives kill -9 and power loss, with a cost per write that does not grow.

Stock TinyDB rewrites the whole file in place on every insert: slow as the file grows, and a kill during a write
that shrinks the file leaves it unparseable. Here every change is first appended to a journal beside the file and
fsynced, many concurrent changes per fsync (group commit), and only then acknowledged. The TinyDB file itself is
rewritten in the background, atomically (temp file, fsync, rename, fsync of the folder), at most
`flush_interval` after a change, so it parses at every instant and `jq` or `tinydb.TinyDB(path)` can read it.
On open, the journal is replayed into the file. One process writes a given file: a lock file enforces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.errors import StoreError

log = logging.getLogger("relay.store")

Doc = dict[str, Any]


def dumps(value: Any) -> str:
    """Strict JSON (RFC 8259: no NaN or Infinity), ASCII-safe so lone surrogates cannot break the file."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes only ever see the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def render_tables(tables: dict[str, dict[int, str]]) -> bytes:
    """A TinyDB document from already-serialized documents: `{"table": {"1": {...}, ...}, ...}`."""
    parts = []
    for name, docs in tables.items():
        body = ",".join(f'"{doc_id}":{text}' for doc_id, text in docs.items())
        parts.append(f"{json.dumps(name)}:{{{body}}}")
    return ("{" + ",".join(parts) + "}\n").encode("ascii")


def read_tinydb(path: Path) -> dict[str, dict[int, Doc]]:
    """Read a TinyDB JSON file into `{table: {doc_id: doc}}`; a missing file is empty."""
    try:
        raw = json.loads(path.read_bytes() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise StoreError(f"{path} is not a TinyDB file (its top level is not an object)")
    return {
        str(name): {int(k): v for k, v in table.items() if k.isdigit() and isinstance(v, dict)}
        for name, table in raw.items()
        if isinstance(table, dict)
    }


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The complete operations of a journal; a torn last line (a crash mid-append) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            op = json.loads(line)
        except ValueError:
            continue
        if isinstance(op, dict) and isinstance(op.get("t"), str) and isinstance(op.get("id"), int):
            yield op


@dataclass
class _Op:
    table: str
    doc_id: int
    doc: Doc | None
    text: str | None
    future: asyncio.Future[int]


class JournaledDB:
    """TinyDB-format tables kept in memory, made durable through a journal, written out atomically."""

    def __init__(self, path: Path, tables: tuple[str, ...], flush_interval: float = 0.5) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.flush_interval = flush_interval
        self.last_error: str | None = None
        self.last_flush = 0.0
        self._tables: dict[str, dict[int, Doc]] = {t: {} for t in tables}
        self._texts: dict[str, dict[int, str]] = {t: {} for t in tables}
        self._next_id: dict[str, int] = dict.fromkeys(tables, 1)
        self._pending: list[_Op] = []
        self._chores: list[tuple[Callable[[], None], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._dirty = False
        self._journal_fd = -1
        self._journal_size = 0
        self._lock_fd = -1
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock, load the file, replay the journal into it and start a fresh journal."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(f"another relay process is writing {self.path}; stop it first") from None
        for name, docs in read_tinydb(self.path).items():
            if name in self._tables:
                self._tables[name] = docs
        for op in read_journal(self.journal_path):
            table = self._tables.get(op["t"])
            if table is None:
                continue
            if op.get("del"):
                table.pop(op["id"], None)
            elif isinstance(op.get("doc"), dict):
                table[op["id"]] = op["doc"]
        for name, docs in self._tables.items():
            self._texts[name] = {doc_id: dumps(doc) for doc_id, doc in sorted(docs.items())}
            self._tables[name] = dict(sorted(docs.items()))
            self._next_id[name] = max(docs, default=0) + 1
        self._write_snapshot()
        self._truncate_journal()

    async def start(self) -> None:
        """Start the single writer task."""
        self._task = asyncio.create_task(self._writer(), name=f"writer:{self.path.name}")

    async def close(self) -> None:
        """Commit what is pending, write the file a last time and release the lock."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- reading -------------------------------------------------------------------------------------------

    def table(self, name: str) -> dict[int, Doc]:
        """The committed documents of a table, oldest first. Do not mutate."""
        return self._tables[name]

    def texts(self, name: str) -> dict[int, str]:
        """The committed documents of a table as serialized JSON. Do not mutate."""
        return self._texts[name]

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
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Op(table, doc_id, doc, text, future))
        self._wake.set()
        return future

    async def put(self, table: str, doc: Doc, doc_id: int | None = None) -> int:
        """Insert or replace a document; returns its id once it is durable."""
        return await self.put_nowait(table, doc, doc_id)

    async def delete(self, table: str, doc_id: int) -> None:
        """Remove a document durably."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Op(table, doc_id, None, None, future))
        self._wake.set()
        await future

    async def chore(self, fn: Callable[[], None]) -> None:
        """Run `fn` in a thread between commits, with no write in flight (rotation, pruning)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chores.append((fn, future))
        self._wake.set()
        await future

    def drop_from_memory(self, table: str, doc_ids: list[int]) -> None:
        """Forget documents that were moved to another file; the next snapshot no longer holds them."""
        for doc_id in doc_ids:
            self._tables[table].pop(doc_id, None)
            self._texts[table].pop(doc_id, None)
        self._dirty = True

    def flush_now(self) -> None:
        """Write the TinyDB file and empty the journal (call from a chore)."""
        self._write_snapshot()
        self._truncate_journal()
        self._dirty = False

    # -- the writer ----------------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            timeout = self.flush_interval if self._dirty else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)
            chores, self._chores = self._chores, []
            for fn, future in chores:
                try:
                    await asyncio.to_thread(fn)
                except Exception as exc:  # a failed chore is reported to its caller, never kills the writer
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            if self._dirty and (self._closing or time.monotonic() - self.last_flush >= self.flush_interval):
                await self._flush()
            if self._closing and not self._pending and not self._chores:
                if self._dirty:
                    await self._flush()
                return

    async def _commit(self, batch: list[_Op]) -> None:
        lines = []
        for op in batch:
            if op.doc is None:
                lines.append(f'{{"t":{json.dumps(op.table)},"id":{op.doc_id},"del":true}}\n')
            else:
                lines.append(f'{{"t":{json.dumps(op.table)},"id":{op.doc_id},"doc":{op.text}}}\n')
        data = "".join(lines).encode("ascii")
        try:
            await asyncio.to_thread(self._append, data)
        except OSError as exc:
            self.last_error = f"cannot write {self.journal_path}: {exc.strerror or exc}"
            log.error("%s", self.last_error)
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(StoreError(self.last_error))
            return
        self.last_error = None
        for op in batch:
            if op.doc is None:
                self._tables[op.table].pop(op.doc_id, None)
                self._texts[op.table].pop(op.doc_id, None)
            else:
                self._tables[op.table][op.doc_id] = op.doc
                assert op.text is not None
                self._texts[op.table][op.doc_id] = op.text
            if not op.future.done():
                op.future.set_result(op.doc_id)
        self._dirty = True

    def _append(self, data: bytes) -> None:
        if self._journal_fd < 0:
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._journal_size = os.fstat(self._journal_fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._journal_fd, view) :]
            os.fsync(self._journal_fd)
        except OSError:
            # Cut a torn append off, or the next good line would be glued to it and lost on replay.
            try:
                os.ftruncate(self._journal_fd, self._journal_size)
            except OSError:
                os.close(self._journal_fd)
                self._journal_fd = -1
            raise
        self._journal_size += len(data)

    async def _flush(self) -> None:
        snapshot = {name: dict(texts) for name, texts in self._texts.items()}
        try:
            await asyncio.to_thread(self._write_and_truncate, snapshot)
        except OSError as exc:
            self.last_error = f"cannot write {self.path}: {exc.strerror or exc}"
            log.error("%s", self.last_error)
            self.last_flush = time.monotonic()  # back off one interval before trying again
            return
        self._dirty = False

    def _write_and_truncate(self, snapshot: dict[str, dict[int, str]]) -> None:
        # Runs in a thread while the loop may queue new ops; those are not appended until this returns,
        # because only the writer task appends, so truncating here cannot drop them.
        atomic_write(self.path, render_tables(snapshot))
        self._truncate_journal()
        self.last_flush = time.monotonic()

    def _write_snapshot(self) -> None:
        try:
            atomic_write(self.path, render_tables(self._texts))
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.last_flush = time.monotonic()

    def _truncate_journal(self) -> None:
        if self._journal_fd >= 0:
            os.ftruncate(self._journal_fd, 0)
            os.fsync(self._journal_fd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.journal_path, 0)
        self._journal_size = 0
