"""The archive's disk budget: `min_free_bytes` stays free for the log, `max_total_bytes` caps the archive.

Checked before a download starts (with the size the server announces) and as it runs, from the worker thread:
a statvfs per megabyte is cheap. When the budget stops downloads, `problem` says why until there is room again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from relay.archive.safefetch import FetchError


class NoRoom(FetchError):
    """The disk budget stops this download for now; it goes on when there is room for `needed` more bytes."""

    def __init__(self, reason: str, needed: int = 0) -> None:
        super().__init__(reason)
        self.needed = needed


class Budget:
    """How much the archive may still write."""

    def __init__(self, root: Path, min_free: int, max_total: int) -> None:
        self.root = root
        self.min_free = min_free
        self.max_total = max_total
        self.total = 0  # bytes of finished files in the archive, measured at start and added to as files land
        self.problem: str | None = None
        self._lock = threading.Lock()

    def measure(self) -> int:
        """Add up the archive's files (blocking: run it in a thread at start)."""
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    total += (Path(folder) / name).lstat().st_size
                except OSError:
                    continue  # removed meanwhile
        with self._lock:
            self.total = total
        return total

    def free(self) -> int:
        """Bytes available to relay on the archive's filesystem."""
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize

    def shortfall(self, incoming: int = 0, written: int = 0) -> str | None:
        """Why `incoming` more bytes (of a file `written` bytes into) may not be written now, or None."""
        free = self.free()
        if free - incoming < self.min_free:
            return f"{_mib(free)} free on the archive's disk, archive.min_free_bytes keeps {_mib(self.min_free)}"
        with self._lock:
            total = self.total
        if self.max_total and total + written + incoming > self.max_total:
            return f"the archive holds {_mib(total)}, archive.max_total_bytes is {_mib(self.max_total)}"
        return None

    def guard(self, written: int, whole: int | None) -> None:
        """For safefetch: stop a download that would break the budget (before it writes, then as it runs)."""
        incoming = max(0, whole - written) if whole is not None else 0
        problem = self.shortfall(incoming, written)
        if problem:
            raise NoRoom(f"paused: {problem}", incoming)

    def add(self, size: int) -> None:
        """A file of `size` bytes landed."""
        with self._lock:
            self.total += size


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"
