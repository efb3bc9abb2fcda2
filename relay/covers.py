"""Cover art for alerts: the archived copy when relay has one, else fetched safely; never holding an alert up.

Apprise is never handed a URL to fetch by itself (it would reach any address a payload names): relay gets the
bytes and attaches them from memory. The fetcher is a plain `async (url) -> bytes | None`, so the archive's safe
fetching (SSRF rules, pinned connections) does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from relay.archive.safefetch import FetchError, Refused, Timeouts, fetch_bytes

logger = logging.getLogger("relay.covers")

ImageFetcher = Callable[[str], Awaitable[bytes | None]]
ArchivedLookup = Callable[[str | None, str], Path | None]

#: Larger pictures are not attached (Pushover takes at most 2.5 MB; a cover is usually well under 1 MB).
MAX_IMAGE_BYTES = 2_500_000
#: The longest an alert waits for its picture.
IMAGE_TIMEOUT = 5.0
_CACHED = 32
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
)


@dataclass(frozen=True)
class Image:
    """A picture to attach, as bytes with a name and MIME type."""

    data: bytes
    name: str
    mimetype: str


def as_image(data: bytes | None, stem: str = "cover") -> Image | None:
    """`data` as an Image when it is a PNG, JPEG, GIF or WebP within the size limit, else None."""
    if not data or len(data) > MAX_IMAGE_BYTES:
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Image(data, f"{stem}.webp", "image/webp")
    for magic, mimetype, extension in _MAGIC:
        if data.startswith(magic):
            return Image(data, f"{stem}.{extension}", mimetype)
    return None


class Covers:
    """Finds the picture for an alert within `timeout`, remembering the last few (a digest or retry asks again)."""

    def __init__(
        self, fetch: ImageFetcher, archived: ArchivedLookup | None = None, timeout: float = IMAGE_TIMEOUT
    ) -> None:
        self.fetch = fetch
        self.archived = archived
        self.timeout = timeout
        self._cache: OrderedDict[str, Image | None] = OrderedDict()

    async def image(self, url: str, task_id: str | None = None) -> Image | None:
        """The picture at `url` (the archived copy first), or None when it cannot be had in time."""
        if url in self._cache:
            return self._cache[url]
        found = await self._find(url, task_id)
        self._cache[url] = found
        while len(self._cache) > _CACHED:
            self._cache.popitem(last=False)
        return found

    async def _find(self, url: str, task_id: str | None) -> Image | None:
        try:
            async with asyncio.timeout(self.timeout):
                path = self.archived(task_id, url) if self.archived else None
                if path is not None:
                    with contextlib.suppress(OSError):
                        image = as_image(await asyncio.to_thread(path.read_bytes))
                        if image is not None:
                            return image
                return as_image(await self.fetch(url))
        except TimeoutError:
            logger.info("no cover image for the alert: no answer within %g s", self.timeout)
        except Exception as exc:  # a picture is a nicety: any failure means an alert without one
            logger.info("no cover image for the alert: %s", exc)
        return None


def make_fetcher(allow_private: bool, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = IMAGE_TIMEOUT) -> ImageFetcher:
    """The archive's safe fetching (relay/archive/safefetch.py: SSRF rules in one place, the checked address pinned,
    every redirect checked) for pictures: raises ValueError saying why a picture was not fetched."""

    async def fetch(url: str) -> bytes | None:
        limits = Timeouts(connect=timeout, read=timeout, total=timeout)
        try:
            body, _ = await fetch_bytes(url, allow_private=allow_private, max_bytes=max_bytes, timeouts=limits)
        except Refused as exc:
            raise ValueError(f"refused: {exc}") from None
        except (FetchError, OSError) as exc:
            raise ValueError(str(exc)) from None
        return body

    return fetch
