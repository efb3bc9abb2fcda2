"""One file's transfer, run in a download worker process (see downloads.py) or, in tests, in-process.

Downloads run in child processes at a lower CPU priority (nice 10) and the lowest best-effort disk priority:
hashing and writing at loopback speed then take no GIL and little CPU from the process that acknowledges
callbacks. A worker dies with relay (PR_SET_PDEATHSIG, and a parent check between chunks), so after kill -9 no
orphan keeps writing a part the restarted relay resumes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.archive import tagging
from relay.archive.budget import Budget
from relay.archive.partfile import fsync_dir, sha256_file
from relay.archive.plan import PREVIEW
from relay.archive.safefetch import FetchError, Limits, Refused, Timeouts, fetch_to_file_sync

logger = logging.getLogger("relay.archive")

COVER_MAX_BYTES = 20 << 20
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus")
_PR_SET_PDEATHSIG = 1
#: The workers' CPU niceness: when the CPU is busy, acknowledging a callback goes first.
WORKER_NICE = 10


@dataclass(frozen=True)
class FetchConfig:
    """What a transfer needs from [archive], picklable for the worker process."""

    allow_private: bool
    max_file_bytes: int
    timeouts: Timeouts
    tag: bool
    artist: str
    album: str
    min_free_bytes: int
    max_total_bytes: int


class _Stop:
    """Set by relay when it stops, or found set when relay is gone."""

    def __init__(self, event: Any, parent: int) -> None:
        self.event = event
        self.parent = parent

    def is_set(self) -> bool:
        return bool(self.event is not None and self.event.is_set()) or os.getppid() != self.parent


_stop = _Stop(None, os.getppid())


def init_worker(event: Any, parent: int) -> None:
    """Initializer of a worker process: lower priority, die with relay, stop when asked."""
    global _stop
    _stop = _Stop(event, parent)
    os.nice(WORKER_NICE)
    _lower_io_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches relay, which stops the workers itself
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # relay died before prctl took effect
        os._exit(1)


_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "i686": 289}
_IOPRIO_BEST_EFFORT_LOWEST = (2 << 13) | 7


def _lower_io_priority() -> None:
    """The lowest best-effort disk priority, where the scheduler honours it: the log's writes go first."""
    number = _IOPRIO_SET.get(os.uname().machine)
    if number is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(number, 1, 0, _IOPRIO_BEST_EFFORT_LOWEST)  # IOPRIO_WHO_PROCESS, this process


@contextlib.contextmanager
def exclusive(dest: Path) -> Iterator[None]:
    """Hold the one lock of `dest` across worker processes: one transfer writes a file's part at a time (an audio
    job fetching its cover for the tags, and the cover's own job, take turns, and the second finds it there)."""
    locks = dest.parent.parent / ".locks"
    locks.mkdir(exist_ok=True)
    name = hashlib.sha256(str(dest).encode()).hexdigest()[:32]
    with (locks / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def fetch_file(dest: Path, data: dict[str, Any], config: FetchConfig, archive_total: int) -> dict[str, Any]:
    """Download one planned file into `dest`; the result is kept on the job (path, bytes, sha256)."""
    role, url = data["role"], data["url"]
    if role == "preview" and _final_exists(dest.parent, data.get("stem", "")):
        return {"state": "superseded", "path": None}
    with exclusive(dest):
        if dest.exists():  # landed before a crash kept its result from being recorded, or fetched for the tags
            size, digest = sha256_file(dest)
            return {"path": str(dest), "bytes": size, "sha256": digest}
        budget = Budget(dest.parent.parent, config.min_free_bytes, config.max_total_bytes)
        budget.total = archive_total
        limits = Limits(config.allow_private, config.max_file_bytes, config.timeouts, cancel=_stop, guard=budget.guard)
        prepare = (lambda part: _tag(part, dest, data, config)) if role == "audio" and config.tag else None
        fetched = fetch_to_file_sync(url, dest, limits, prepare=prepare)
    if role == "audio":
        _drop_previews(dest.parent, data.get("stem", ""))
    return {"path": str(dest), "bytes": fetched.bytes, "sha256": fetched.sha256, "content_type": fetched.content_type}


def _tag(part: Path, dest: Path, data: dict[str, Any], config: FetchConfig) -> bool:
    if tagging.audio_format(part) is None:
        return False  # WAV, FLAC, or not audio at all: kept as served
    tags = data.get("tags") or {}
    album = config.album or tags.get("album")
    cover = _cover(dest.parent, data, config)
    wanted = tagging.Tags(tags.get("title"), config.artist or None, album, tagging.genres(tags.get("genre")), cover)
    try:
        return tagging.write_tags(part, wanted) is not None
    except Exception as exc:  # mutagen's errors vary by format; an untagged song beats no song
        logger.warning("cannot tag %s: %s", dest.name, exc)
        return True  # it may have written part of the tags: hash what is there


def _cover(folder: Path, data: dict[str, Any], config: FetchConfig) -> bytes | None:
    """The track's cover: from disk if its download landed, else fetched now into its place (its own job then finds
    it there, so the URL is fetched once)."""
    name, url = data.get("cover_name"), data.get("cover_url")
    if not name or not url:
        return None
    path = folder / str(name)
    limits = Limits(config.allow_private, COVER_MAX_BYTES, Timeouts(10.0, 20.0, 60.0), cancel=_stop)
    try:
        with exclusive(path):
            if not path.exists():
                fetch_to_file_sync(url, path, limits)
            return path.read_bytes()
    except (FetchError, Refused, OSError) as exc:
        logger.info("no cover for %s: %s", data.get("name"), exc)
        return None


def _final_exists(folder: Path, stem: str) -> bool:
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(stem + ".") and entry.suffix.lower() in AUDIO_EXTENSIONS:
                return True
    return False


def _drop_previews(folder: Path, stem: str) -> None:
    removed = False
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(stem + PREVIEW):
                entry.unlink(missing_ok=True)
                removed = True
    if removed:
        fsync_dir(folder)
