"""Fetching a payload's link safely: SSRF rules (addresses.py), a pinned connection, limits, complete-or-absent files.

relay connects to the address it checked, never looking the name up a second time (DNS rebinding could change the
answer); the Host header and TLS (SNI and certificate verification) still use the name. Every redirect is checked
again, at most `MAX_REDIRECTS`. A file is written under a temporary name beside its destination, fsynced and renamed,
so a file at the destination is always whole; an interrupted download resumes with HTTP Range where the server
allows it. The transfer runs in a worker thread with blocking sockets: large reads, hashing and writes release the
GIL, so a download at loopback speed barely touches the event loop that acknowledges callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin

from relay.archive import pinned
from relay.archive.addresses import Policy, Refused, Resolver, Target, check, forbidden_reason, parse, system_resolver
from relay.archive.partfile import PartFile

T = TypeVar("T")
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT = (404, 408, 410, 425, 429, 500, 502, 503, 504)  # a link can 404 for a moment right after the callback
_NOT_MEDIA = ("text/", "application/json", "application/xml", "application/xhtml")

__all__ = ["FetchError", "FetchResult", "Refused", "Timeouts", "fetch_bytes", "fetch_to_file", "forbidden_reason"]


class FetchError(Exception):
    """A download that did not complete; `retry` says whether trying again later may help."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a worker process and re-raised in relay: keep `retry` (and subclasses' fields) across pickling.
        return (self.__class__, (str(self),), dict(self.__dict__))


class Stop(Protocol):
    """Something that says when a transfer should stop (a threading or multiprocessing Event)."""

    def is_set(self) -> bool:
        """Whether to stop now."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect, between two reads, and for the whole transfer."""

    connect: float = 15.0
    read: float = 60.0
    total: float = 3600.0


@dataclass(frozen=True)
class FetchResult:
    """A completed download."""

    path: Path
    bytes: int
    sha256: str
    content_type: str | None
    final_url: str
    resumed_from: int = 0


@dataclass
class Limits:
    """What one fetch may do; `guard(written)` may raise to stop it (the disk budget)."""

    allow_private: bool
    max_bytes: int
    timeouts: Timeouts = field(default_factory=Timeouts)
    media: bool = True  # refuse text/html and the like: a CDN's error page is not the song
    cancel: Stop | None = None
    guard: Callable[[int, int | None], None] | None = None  # (bytes so far, whole size if known)
    resolve: Resolver = system_resolver
    policy: Policy = forbidden_reason


_Response = pinned.Answer


@contextlib.contextmanager
def _open(url: str, limits: Limits, headers: dict[str, str]) -> Iterator[_Response]:
    """GET `url`, following up to MAX_REDIRECTS redirects, each hop checked and pinned to its checked address."""
    for _ in range(MAX_REDIRECTS + 1):
        target = parse(url)
        address = check(target, allow_private=limits.allow_private, resolve=limits.resolve, policy=limits.policy)
        with _request(target, str(address), limits, headers) as opened:
            if opened.status in _REDIRECTS and "location" in opened.headers:
                url = urljoin(url, opened.headers["location"])
                continue
            yield opened
            return
    raise FetchError(f"more than {MAX_REDIRECTS} redirects", retry=False)


@contextlib.contextmanager
def _request(target: Target, address: str, limits: Limits, headers: dict[str, str]) -> Iterator[_Response]:
    try:
        with pinned.get(target, address, headers, (limits.timeouts.connect, limits.timeouts.read)) as answer:
            yield answer
    except pinned.NetworkError as exc:  # only the network's errors: the part file's (a full disk) pass as they are
        raise FetchError(str(exc)) from None


def _status_error(response: _Response) -> FetchError:
    return FetchError(f"HTTP {response.status}", retry=response.status in _TRANSIENT)


def _check_headers(response: _Response, limits: Limits, already: int) -> int | None:
    """The body's length if the server says it; refuses bodies too large or not media."""
    ctype = response.headers.get("content-type", "").lower()
    if limits.media and ctype.startswith(_NOT_MEDIA):
        raise FetchError(f"the server sent {ctype.split(';')[0]}, not a media file")
    length = response.headers.get("content-length")
    size = int(length) if length and length.isdigit() else None
    if size is not None and already + size > limits.max_bytes:
        raise FetchError(
            f"{already + size} bytes is more than archive.max_file_bytes ({limits.max_bytes})", retry=False
        )
    return size


def fetch_to_file_sync(
    url: str, dest: Path, limits: Limits, *, resume: bool = True, prepare: Callable[[Path], bool] | None = None
) -> FetchResult:
    """Download `url` to `dest` (blocking): whole or not at all; `prepare(part)` may change it before the rename
    (and says whether it did)."""
    part = PartFile(dest, url)
    offset = part.resumable() if resume else 0
    if not offset:
        part.reset()
    deadline = time.monotonic() + limits.timeouts.total
    try:
        with _open(url, limits, part.range_headers(offset)) as response:
            offset = _starting_point(response, part, offset)
            if offset >= 0:
                size = _check_headers(response, limits, offset)
                whole = offset + size if size is not None else None
                if limits.guard is not None:
                    limits.guard(offset, whole)
                part.begin(offset, response.headers)
                _copy(response, part, limits, (offset, whole), deadline)
                content_type, final_url = response.headers.get("content-type"), response.url
    except FetchError as exc:
        part.close() if exc.retry else part.discard()
        raise
    except BaseException:
        part.close()
        raise
    if offset < 0:  # the server no longer has the version begun, or sent another range: start over
        part.reset()
        return fetch_to_file_sync(url, dest, limits, resume=False, prepare=prepare)
    size, digest = part.finish(prepare)
    return FetchResult(dest, size, digest, content_type, final_url, offset)


def _starting_point(response: _Response, part: PartFile, offset: int) -> int:
    """Where the body starts in the file: 0, `offset` for a fitting 206, or -1 when the resume must start over."""
    if response.status == 200:
        return 0
    if response.status == 206 and offset and part.accepts(response.headers.get("content-range", ""), offset):
        return offset
    if offset and response.status in (206, 416):
        return -1
    raise _status_error(response)


def _copy(response: _Response, part: PartFile, limits: Limits, sizes: tuple[int, int | None], deadline: float) -> None:
    written, whole = sizes
    for chunk in response.chunks:
        written += len(chunk)
        if written > limits.max_bytes:
            raise FetchError(f"more than archive.max_file_bytes ({limits.max_bytes}) bytes", retry=False)
        part.write(chunk)
        if limits.cancel is not None and limits.cancel.is_set():
            raise FetchError("stopped before it was complete; resumes later")
        if limits.guard is not None:
            limits.guard(written, whole)
        if time.monotonic() > deadline:
            raise FetchError(f"took longer than {limits.timeouts.total:g} s")
    if whole is not None and written != whole:
        raise FetchError(f"bad HTTP response: {written} bytes of the {whole} announced")


def fetch_bytes_sync(url: str, limits: Limits) -> tuple[bytes, str | None]:
    """A small body in memory (blocking), under the same rules: (body, content type)."""
    with _open(url, limits, {}) as response:
        if response.status != 200:
            raise _status_error(response)
        _check_headers(response, limits, 0)
        body = bytearray()
        for chunk in response.chunks:
            body += chunk
            if len(body) > limits.max_bytes:
                raise FetchError(f"more than {limits.max_bytes} bytes", retry=False)
        return bytes(body), response.headers.get("content-type")


async def fetch_to_file(
    url: str,
    dest: Path,
    *,
    allow_private: bool,
    max_bytes: int,
    timeouts: Timeouts | None = None,
    resume: bool = True,
    executor: Executor | None = None,
) -> FetchResult:
    """Download `url` to `dest` in a worker thread; cancelling stops it and keeps the part for a resume."""
    cancel = threading.Event()
    limits = Limits(allow_private, max_bytes, timeouts or Timeouts(), cancel=cancel)
    return await run_cancellable(executor, cancel, lambda: fetch_to_file_sync(url, dest, limits, resume=resume))


async def fetch_bytes(
    url: str, *, allow_private: bool, max_bytes: int, timeouts: Timeouts | None = None, media: bool = True
) -> tuple[bytes, str | None]:
    """A small file (e.g. a cover image) in memory: (body, content type). Raises Refused or FetchError."""
    limits = Limits(allow_private, max_bytes, timeouts or Timeouts(read=20.0, total=60.0), media=media)
    return await asyncio.to_thread(fetch_bytes_sync, url, limits)


async def run_cancellable(executor: Executor | None, cancel: threading.Event, work: Callable[[], T]) -> T:
    """Run blocking `work` in `executor`; if the caller is cancelled, ask the work to stop and wait for it."""
    future = asyncio.get_running_loop().run_in_executor(executor, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await future
        raise
