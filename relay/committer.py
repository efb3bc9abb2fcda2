"""The thread that makes journal appends durable: group commit, and moving the journal aside for a snapshot.

It takes whatever operations are queued, appends them with one write and one fsync, and hands the batch back to
the event loop (`on_committed`), which meanwhile goes on serving requests. See journal.py for the whole design.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.jsonfiles import Doc, complete_length, fsync_dir

logger = logging.getLogger("relay.store")


@dataclass
class Op:
    """One queued change: an insert or replace (`doc` and its serialized `text`), or a deletion (`doc` None)."""

    table: str
    doc_id: int
    doc: Doc | None
    text: str | None
    future: asyncio.Future[int]

    def line(self) -> str:
        """The operation as a journal line."""
        if self.doc is None:
            return f'{{"t":{json.dumps(self.table)},"id":{self.doc_id},"del":true}}\n'
        return f'{{"t":{json.dumps(self.table)},"id":{self.doc_id},"doc":{self.text}}}\n'


Committed = Callable[[list[Op], "str | None"], None]


class Committer:
    """Appends queued operations to `journal` from a thread of its own; results go back through the loop."""

    def __init__(self, journal: Path, old_journal: Path, on_committed: Committed) -> None:
        self.journal = journal
        self.old_journal = old_journal
        self.on_committed = on_committed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cv = threading.Condition()  # guards the three fields below
        self._queue: list[Op] = []
        self._cut_requests: list[asyncio.Future[None]] = []
        self._stop = False
        self._thread: threading.Thread | None = None
        self._fd = -1  # the thread's alone while it runs
        self._size = 0

    def open_journal(self) -> None:
        """Open (creating) the journal, so its name is durable before the first append is acknowledged."""
        self._fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = cut_torn_tail(self._fd)
        # A commit is acknowledged after fsync of the journal alone, so its name must already be durable:
        # this also makes a preceding rename of the previous journal durable.
        fsync_dir(self.journal.parent)

    def start(self) -> None:
        """Start the thread; call from the event loop that should receive the results."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"commit:{self.journal.name}", daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> bool:
        """Queue `op`; False when the committer is stopped."""
        with self._cv:
            if self._stop or self._thread is None:
                return False
            self._queue.append(op)
            self._cv.notify()
        return True

    async def cut(self) -> None:
        """Move the journal aside; returns once every earlier batch has been handed back to the loop."""
        if self._thread is None:
            self._move_journal()
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cv:
            self._cut_requests.append(done)
            self._cv.notify()
        await done

    async def stop(self) -> None:
        """Commit what is queued, then end the thread and close the journal."""
        if self._thread is not None:
            with self._cv:
                self._stop = True
                self._cv.notify()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            await asyncio.sleep(0)  # let the last results, scheduled before the thread ended, land

    def close(self) -> None:
        """Close the journal file (after `stop`)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- in the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._queue or self._cut_requests or self._stop))
                batch, self._queue = self._queue, []
                cuts, self._cut_requests = self._cut_requests, []
                stopping = self._stop and not batch
            if batch:
                self._commit(batch)
            if cuts:
                self._move_journal()
                for done in cuts:
                    self._call_soon(_resolve, done)
            if stopping:
                return

    def _commit(self, batch: list[Op]) -> None:
        error = None
        try:
            self._append("".join(op.line() for op in batch).encode("ascii"))
        except OSError as exc:
            error = f"cannot write {self.journal}: {exc.strerror or exc}"
        except Exception as exc:  # a bug here must fail these requests, not leave them waiting forever
            logger.exception("commit failed")
            error = f"cannot write {self.journal}: {exc}"
        self._call_soon(self.on_committed, batch, error)

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            self.open_journal()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            # Cut a torn append off, or the next good line would be glued to it and lost on replay.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                os.close(self._fd)
                self._fd = -1
            raise
        self._size += len(data)

    def _move_journal(self) -> None:
        if self._fd >= 0 and self._size == 0:
            return  # nothing committed since the last cut
        if self.old_journal.exists():
            # The last snapshot failed (or relay stopped before it): the next one covers both journals and deletes
            # the old one, so the current one joins it; left behind, it would replay onto newer snapshots.
            self._merge_into_old()
            return
        self.close()
        try:
            self.journal.rename(self.old_journal)
            self.open_journal()
        except FileNotFoundError:
            pass  # no journal yet: the next append creates it
        except OSError as exc:  # the next append opens (or creates) the journal again
            logger.error("cannot move %s aside: %s", self.journal.name, exc.strerror or exc)

    def _merge_into_old(self) -> None:
        if self._fd < 0:
            return  # the current journal could not be opened: the next append tries again
        try:
            old = os.open(self.old_journal, os.O_RDWR | os.O_APPEND)
        except OSError as exc:
            logger.error("cannot open %s: %s", self.old_journal.name, exc.strerror or exc)
            return
        try:
            size = cut_torn_tail(old)
            try:
                offset = 0
                while offset < self._size:
                    chunk = os.pread(self._fd, min(1 << 20, self._size - offset), offset)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(old, view) :]
                    offset += len(chunk)
                os.fsync(old)
            except OSError:
                os.ftruncate(old, size)  # never leave a torn line for the next merge to glue onto
                raise
            # Replaying a change twice changes nothing, so a crash before this truncation loses nothing.
            os.ftruncate(self._fd, 0)
            self._size = 0
        except OSError as exc:
            logger.error("cannot move %s aside: %s", self.journal.name, exc.strerror or exc)
        finally:
            os.close(old)

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(fn, *args)


def cut_torn_tail(fd: int) -> int:
    """Cut a torn last line (a crash mid-append) off the journal open at `fd`; returns the length kept.

    The next append would be glued to it, and the whole line lost on replay. Truncating needs no free space.
    """
    length = complete_length(fd)
    if length < os.fstat(fd).st_size:
        os.ftruncate(fd, length)
    return length


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
