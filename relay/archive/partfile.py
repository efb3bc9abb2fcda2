"""A download in progress: `.NAME.part` beside its destination, renamed only when whole.

Beside the part, `.NAME.part.json` remembers the URL, the server's validators (ETag, Last-Modified), the boot it
was written in and how many bytes are known to be on disk (fdatasync'ed every `SYNC_EVERY` bytes). After kill -9
the kernel still holds every byte written, so the whole part is kept; after a power loss (another boot) only the
bytes synced are. Either way the resume asks for the same version of the file (If-Range). The leading dot
keeps music players and library scanners from picking up a half file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SYNC_EVERY = 64 << 20
#: How often the kernel is asked to start writing the part out (without waiting): a download then never holds a
#: large amount of dirty data that the log's next fsync (one ext4 journal) would have to wait for.
WRITEBACK_EVERY = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2) from libc, or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return function


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@functools.cache
def boot_id() -> str | None:
    """This boot of the machine (Linux), or None where the kernel does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class PartFile:
    """The temporary file of one download and what is known about it."""

    def __init__(self, dest: Path, url: str) -> None:
        self.dest = dest
        self.url = url
        self.path = dest.with_name(f".{dest.name}.part")
        self.meta_path = dest.with_name(f".{dest.name}.part.json")
        self._meta: dict[str, Any] = {}
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._synced = 0
        self._kicked = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._writer: threading.Thread | None = None
        self._error: OSError | None = None

    def resumable(self) -> int:
        """How many bytes of an earlier attempt can be kept (0: start afresh)."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            size = self.path.stat().st_size
        except (OSError, ValueError):
            return 0
        if not isinstance(meta, dict) or meta.get("url") != self.url:
            return 0
        if not (meta.get("etag") or meta.get("last_modified") or meta.get("length")):
            return 0  # nothing to tell the same file from another one
        self._meta = meta
        if meta.get("boot") and meta.get("boot") == boot_id():
            return size
        synced = meta.get("synced")
        return min(size, synced) if isinstance(synced, int) and synced > 0 else 0

    def range_headers(self, offset: int) -> dict[str, str]:
        """Request headers asking for the rest of the file, if it is still the same file."""
        if not offset:
            return {}
        headers = {"Range": f"bytes={offset}-"}
        validator = self._meta.get("etag") if not str(self._meta.get("etag", "")).startswith("W/") else None
        validator = validator or self._meta.get("last_modified")
        if validator:
            headers["If-Range"] = str(validator)
        return headers

    def accepts(self, content_range: str, offset: int) -> bool:
        """Whether a 206 answer continues the part exactly where it stops."""
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None or int(match[1]) != offset:
            return False
        length = self._meta.get("length")
        return not (isinstance(length, int) and match[3] != "*" and int(match[3]) != length)

    def reset(self) -> None:
        """Forget any earlier attempt."""
        self.discard()
        self._meta = {}

    def begin(self, offset: int, headers: Mapping[str, str]) -> None:
        """Open the part for writing at `offset`, hashing what is kept, and note the server's validators."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        if offset:
            with self.path.open("rb") as fh:
                remaining = offset
                while remaining and (chunk := fh.read(min(remaining, 1 << 20))):
                    self._hash.update(chunk)
                    remaining -= len(chunk)
        else:
            length = headers.get("content-length", "")
            self._meta = {
                "url": self.url,
                "etag": headers.get("etag"),
                "last_modified": headers.get("last-modified"),
                "length": int(length) if length.isdigit() else None,
                "boot": boot_id(),
            }
        self._size = self._synced = self._kicked = offset
        self._save_meta()

    def write(self, chunk: bytes) -> None:
        """Append one chunk: handed to the writer thread, so hashing and writing overlap the next read."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._drain, name="part-writer", daemon=True)
            self._writer.start()
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._append(chunk)
                except OSError as exc:
                    self._error = exc

    def _append(self, chunk: bytes) -> None:
        assert self._fd is not None
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(chunk)
        self._size += len(chunk)
        if self._size - self._kicked >= WRITEBACK_EVERY:
            start_writeback = _sync_file_range()
            if start_writeback is not None:
                start_writeback(self._fd, self._kicked, self._size - self._kicked, _SYNC_FILE_RANGE_WRITE)
            self._kicked = self._size
        if self._size - self._synced >= SYNC_EVERY:
            # Spreads the writeback over the download (no long fsync at the end competing with the log's),
            # and lets a resume trust this many bytes.
            os.fdatasync(self._fd)
            self._synced = self._size
            self._save_meta()

    def _settle(self) -> None:
        """Wait until the writer has written everything handed to it."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def finish(self, prepare: Callable[[Path], bool] | None = None) -> tuple[int, str]:
        """fsync, let `prepare` edit the part (tags; True if it did), rename it into place; returns size and sha256."""
        self._settle()
        if self._error is not None:
            raise self._error
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        size, digest = self._size, self._hash.hexdigest()
        if prepare is not None and prepare(self.path):
            size, digest = sha256_file(self.path)
            with self.path.open("rb+") as fh:
                os.fsync(fh.fileno())
        self.path.replace(self.dest)
        self.meta_path.unlink(missing_ok=True)
        fsync_dir(self.dest.parent)
        return size, digest

    def discard(self) -> None:
        """Close and delete the part and its notes."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the part, keeping it for a later resume."""
        self._settle()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _save_meta(self) -> None:
        tmp = self.meta_path.with_name(self.meta_path.name + ".tmp")
        tmp.write_text(json.dumps({**self._meta, "synced": self._synced}), encoding="utf-8")
        tmp.replace(self.meta_path)
