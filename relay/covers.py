"""Cover art for alerts: the archived copy when relay has one, else fetched safely; never holding an alert up.

Apprise is never handed a URL to fetch by itself (it would reach any address a payload names): relay gets the
bytes and attaches them from memory. The fetcher is a plain `async (url) -> bytes | None`, so the archive's safe
fetching (SSRF rules, pinned connections) can replace the minimal one here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

logger = logging.getLogger("relay.covers")

ImageFetcher = Callable[[str], Awaitable[bytes | None]]
ArchivedLookup = Callable[[str | None, str], Path | None]

#: Larger pictures are not attached (Pushover takes at most 2.5 MB; a cover is usually well under 1 MB).
MAX_IMAGE_BYTES = 2_500_000
#: The longest an alert waits for its picture.
IMAGE_TIMEOUT = 5.0
_REDIRECTS = 3
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


def refusal(address: str) -> str | None:
    """Why an address is not fetched without `allow_private` (loopback, private, link-local, …), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    ):
        if flag:
            return f"{address} is a {label} address"
    return None


async def _check(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {parts.scheme or '?'}:")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    for info in infos:
        why = refusal(str(info[4][0]))
        if why:
            raise ValueError(f"refused: {why}")


def make_fetcher(allow_private: bool, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = IMAGE_TIMEOUT) -> ImageFetcher:
    """A minimal safe image fetcher: http(s) only, non-public addresses refused (each redirect checked too)."""

    async def fetch(url: str) -> bytes | None:
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client:
            for _ in range(_REDIRECTS + 1):
                await _check(url, allow_private)
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ValueError(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise ValueError(f"more than {max_bytes} bytes")
                    return bytes(body)
        raise ValueError("too many redirects")

    return fetch
