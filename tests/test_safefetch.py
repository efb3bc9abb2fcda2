"""Safe fetching, in-process against loopback servers: the SSRF table, pinning, redirects, limits and resumes.

Every URL here is a loopback spelling. Where a case needs an address that counts as public, the test injects a
policy that treats 127.0.0.2 as public, and a resolver for made-up names: no traffic leaves loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.archive.addresses import IPAddress, Refused, forbidden_reason
from relay.archive.partfile import PartFile
from relay.archive.safefetch import FetchError, Limits, Timeouts, fetch_bytes_sync, fetch_to_file_sync
from tests.asset_server import AssetServer, body, sha256_of

FAKE_PUBLIC = ipaddress.IPv4Address("127.0.0.2")


class Canary:
    """A listener on 127.0.0.1 that counts every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    """A connection-counting listener on loopback."""
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture
def assets() -> Iterator[AssetServer]:
    """The asset server on 127.0.0.1."""
    server = AssetServer()
    yield server
    server.close()


@pytest.fixture
def public_assets() -> Iterator[AssetServer]:
    """The asset server on 127.0.0.2, which `fake_policy` treats as a public address."""
    server = AssetServer("127.0.0.2")
    yield server
    server.close()


def fake_policy(address: IPAddress) -> str | None:
    """The real policy, except that 127.0.0.2 plays a public address."""
    return None if address == FAKE_PUBLIC else forbidden_reason(address)


def fake_resolver(names: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    """A resolver for made-up names (never the network)."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        if calls is not None:
            calls.append(host)
        if host == "localhost":
            return [ipaddress.ip_address("127.0.0.1")]
        return [ipaddress.ip_address(a) for a in names[host]]

    return resolve


def strict(**changes: Any) -> Limits:
    """Limits as a user has them: private addresses refused."""
    return dataclasses.replace(Limits(allow_private=False, max_bytes=10 << 20, timeouts=Timeouts(5, 5, 30)), **changes)


def loose(**changes: Any) -> Limits:
    """Limits as tests against the loopback asset server use them."""
    return dataclasses.replace(Limits(allow_private=True, max_bytes=10 << 20, timeouts=Timeouts(5, 5, 60)), **changes)


SSRF_URLS = [
    ("dotted", "http://127.0.0.1:{p}/x"),
    ("localhost", "http://localhost:{p}/x"),
    ("localhost-trailing-dot-upper", "http://LOCALHOST.:{p}/x"),
    ("decimal", "http://2130706433:{p}/x"),
    ("hex-short", "http://0x7f.1:{p}/x"),
    ("hex-whole", "http://0x7f000001:{p}/x"),
    ("octal", "http://0177.0.0.1:{p}/x"),
    ("zero-padded", "http://127.000.000.001:{p}/x"),
    ("short-form", "http://127.1:{p}/x"),
    ("other-loopback", "http://127.42.0.7:{p}/x"),
    ("unspecified", "http://0.0.0.0:{p}/x"),
    ("zero", "http://0:{p}/x"),
    ("ipv6-loopback", "http://[::1]:{p}/x"),
    ("ipv6-unspecified", "http://[::]:{p}/x"),
    ("ipv4-mapped", "http://[::ffff:127.0.0.1]:{p}/x"),
    ("ipv4-mapped-hex", "http://[::ffff:7f00:1]:{p}/x"),
    ("ipv4-mapped-long", "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/x"),
    ("nat64-embedded", "http://[64:ff9b::7f00:1]:{p}/x"),
    ("6to4-embedded", "http://[2002:7f00:1::]:{p}/x"),
    ("https", "https://127.0.0.1:{p}/x"),
    ("userinfo", "http://user:pw@127.0.0.1:{p}/x"),
    ("ftp", "ftp://127.0.0.1:{p}/x"),
    ("file", "file:///etc/passwd"),
    ("gopher", "gopher://127.0.0.1:{p}/_x"),
    ("zone-id", "http://[::1%25lo]:{p}/x"),
    ("backslash", "http://127.0.0.1:{p}\\@x/"),
]


@pytest.mark.parametrize(("url"), [u for _, u in SSRF_URLS], ids=[i for i, _ in SSRF_URLS])
def test_ssrf_table_is_refused_before_any_connection(url: str, canary: Canary, tmp_path: Path) -> None:
    """With allow_private false, every loopback spelling and every non-http scheme is refused without a request."""
    url = url.format(p=canary.port)
    with pytest.raises(Refused):
        fetch_to_file_sync(url, tmp_path / "f.mp3", strict())
    with pytest.raises(Refused):
        fetch_bytes_sync(url, strict())
    assert canary.connections == 0
    assert list(tmp_path.iterdir()) == []


def test_a_name_resolving_to_loopback_is_refused(canary: Canary, tmp_path: Path) -> None:
    """A DNS name whose address is loopback is refused (the check is on the address, not the spelling)."""
    limits = strict(resolve=fake_resolver({"music.example.test": ["127.0.0.1"]}), policy=fake_policy)
    with pytest.raises(Refused, match=r"resolves to 127\.0\.0\.1"):
        fetch_to_file_sync(f"http://music.example.test:{canary.port}/x", tmp_path / "f", limits)
    assert canary.connections == 0


def test_a_name_with_any_loopback_address_is_refused(canary: Canary, tmp_path: Path) -> None:
    """When a name has several addresses, one forbidden address is enough to refuse it."""
    resolve = fake_resolver({"mixed.example.test": ["127.0.0.2", "127.0.0.1"]})
    with pytest.raises(Refused):
        fetch_to_file_sync(f"http://mixed.example.test:{canary.port}/x", tmp_path / "f", strict(resolve=resolve))
    assert canary.connections == 0


def test_a_redirect_to_loopback_is_refused(public_assets: AssetServer, canary: Canary, tmp_path: Path) -> None:
    """Each redirect is checked again: a public server sending relay to loopback gets nothing."""
    url = public_assets.url(f"/redirect/2?to=http://127.0.0.1:{canary.port}/secret")
    with pytest.raises(Refused, match="loopback"):
        fetch_to_file_sync(url, tmp_path / "f", strict(policy=fake_policy))
    assert public_assets.hits["/redirect/2"] == 1
    assert public_assets.hits["/redirect/1"] == 1
    assert canary.connections == 0
    assert list(tmp_path.iterdir()) == []


def test_the_checked_address_is_the_one_connected_to(public_assets: AssetServer, tmp_path: Path) -> None:
    """One lookup per hop; relay connects to that address and still sends the name as Host."""
    calls: list[str] = []
    resolve = fake_resolver({"cdn.example.test": ["127.0.0.2"]}, calls)
    url = f"http://cdn.example.test:{public_assets.port}/bytes/5000?seed=4"
    result = fetch_to_file_sync(url, tmp_path / "f.mp3", strict(resolve=resolve, policy=fake_policy))
    assert calls == ["cdn.example.test"]
    assert public_assets.requests[-1]["headers"]["Host"] == f"cdn.example.test:{public_assets.port}"
    assert result.sha256 == sha256_of(5000, 4)


def test_a_second_answer_from_dns_cannot_move_the_connection(
    public_assets: AssetServer, canary: Canary, tmp_path: Path
) -> None:
    """DNS rebinding: a name that answers public first and loopback after is only looked up once per hop."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in next(answers)]

    url = f"http://rebind.example.test:{public_assets.port}/bytes/1000"
    result = fetch_to_file_sync(url, tmp_path / "f.mp3", strict(resolve=rebinding, policy=fake_policy))
    assert result.bytes == 1000
    assert canary.connections == 0


def test_more_than_five_redirects_fail(assets: AssetServer, tmp_path: Path) -> None:
    """At most five redirects are followed."""
    fetch_to_file_sync(assets.url("/redirect/5"), tmp_path / "ok.mp3", loose())
    with pytest.raises(FetchError, match="redirects"):
        fetch_to_file_sync(assets.url("/redirect/6"), tmp_path / "f.mp3", loose())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp3"]


@pytest.mark.parametrize(
    ("path", "size", "seed"),
    [
        ("/bytes/0", 0, 0),
        ("/bytes/1", 1, 0),
        ("/bytes/3000000?seed=7", 3_000_000, 7),
        ("/bytes/25000000?range=0", 25_000_000, 0),
    ],
    ids=["empty", "one-byte", "3MB", "25MB-no-range"],
)
def test_files_land_whole_with_their_sha256(
    assets: AssetServer, tmp_path: Path, path: str, size: int, seed: int
) -> None:
    """The file at the destination has exactly the served bytes; size and sha256 are reported; no part is left."""
    result = fetch_to_file_sync(assets.url(path), tmp_path / "song.mp3", loose(max_bytes=50 << 20))
    assert (result.bytes, result.sha256) == (size, sha256_of(size, seed))
    assert (tmp_path / "song.mp3").stat().st_size == size
    assert [p.name for p in tmp_path.iterdir()] == ["song.mp3"]


def test_too_large_is_stopped_and_nothing_kept(assets: AssetServer, tmp_path: Path) -> None:
    """Larger than max_bytes (announced, or found while streaming): failed for good, no file, no part."""
    with pytest.raises(FetchError, match="max_file_bytes") as announced:
        fetch_to_file_sync(assets.url("/bytes/2000000"), tmp_path / "a.mp3", loose(max_bytes=1_000_000))
    assert announced.value.retry is False
    unannounced = assets.url("/trickle/2000000?chunk=500000&delay=0&length=0")
    with pytest.raises(FetchError, match="max_file_bytes"):
        fetch_to_file_sync(unannounced, tmp_path / "b.mp3", loose(max_bytes=1_500_000))
    assert list(tmp_path.iterdir()) == []


def test_an_error_page_is_not_a_song(assets: AssetServer, tmp_path: Path) -> None:
    """A 200 with text/html (a CDN's error page) fails, to be retried; nothing is kept."""
    with pytest.raises(FetchError, match="text/html") as caught:
        fetch_to_file_sync(assets.url("/html"), tmp_path / "a.mp3", loose())
    assert caught.value.retry is True
    assert not (tmp_path / "a.mp3").exists()


def test_404_then_200(assets: AssetServer, tmp_path: Path) -> None:
    """A link that 404s right after the callback is retried (retry=True) and then lands."""
    with pytest.raises(FetchError, match="HTTP 404") as caught:
        fetch_to_file_sync(assets.url("/flaky/4000?fails=1"), tmp_path / "a.mp3", loose())
    assert caught.value.retry is True
    assert fetch_to_file_sync(assets.url("/flaky/4000?fails=1"), tmp_path / "a.mp3", loose()).bytes == 4000


def _interrupted(assets: AssetServer, tmp_path: Path, query: str) -> tuple[str, Path]:
    """Start a slow download and stop it mid-way, leaving its part file."""
    url = assets.url(f"/trickle/3000000?chunk=100000&delay=0.01{query}")
    dest = tmp_path / "song.mp3"
    cancel = threading.Event()

    def guard(written: int, whole: int | None) -> None:
        if written >= 1_000_000:
            cancel.set()

    with pytest.raises(FetchError, match="stopped"):
        fetch_to_file_sync(url, dest, loose(cancel=cancel, guard=guard))
    assert not dest.exists()
    return url, dest


def test_an_interrupted_download_resumes_with_range(assets: AssetServer, tmp_path: Path) -> None:
    """A part whose bytes are on disk resumes with Range/If-Range and the whole file's sha256 is right."""
    url, dest = _interrupted(assets, tmp_path, "")
    result = fetch_to_file_sync(url, dest, loose())
    assert result.resumed_from >= 800_000
    assert assets.requests[-1]["headers"]["Range"] == f"bytes={result.resumed_from}-"
    assert assets.requests[-1]["headers"]["If-Range"] == '"0-3000000"'
    assert (result.bytes, result.sha256) == (3_000_000, sha256_of(3_000_000))
    assert dest.read_bytes() == body(3_000_000)


def test_a_server_without_range_restarts_from_zero(assets: AssetServer, tmp_path: Path) -> None:
    """When the server ignores Range (200), the part is dropped and the file comes whole from the start."""
    url, dest = _interrupted(assets, tmp_path, "&range=0")
    result = fetch_to_file_sync(url, dest, loose())
    assert result.resumed_from == 0
    assert (result.bytes, result.sha256) == (3_000_000, sha256_of(3_000_000))


def test_after_a_reboot_only_synced_bytes_are_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the same boot the whole part is kept (kill -9 loses nothing the kernel holds); after another boot a
    resume starts from the bytes recorded as fdatasync'ed; another URL never resumes."""
    part = PartFile(tmp_path / "a.mp3", "http://127.0.0.1/x")
    part.begin(0, {"etag": '"v1"', "content-length": "100"})
    part.write(b"x" * 60)
    part.close()
    assert PartFile(tmp_path / "a.mp3", "http://127.0.0.1/x").resumable() == 60
    assert PartFile(tmp_path / "a.mp3", "http://127.0.0.1/other").resumable() == 0
    monkeypatch.setattr("relay.archive.partfile.boot_id", lambda: "another-boot")
    assert PartFile(tmp_path / "a.mp3", "http://127.0.0.1/x").resumable() == 0


def test_the_async_api_others_reuse(assets: AssetServer, canary: Canary, tmp_path: Path) -> None:
    """fetch_to_file and fetch_bytes (alert cover images reuse them) apply the same rules from async code."""
    from relay.archive.safefetch import fetch_bytes, fetch_to_file

    async def run() -> None:
        result = await fetch_to_file(
            assets.url("/bytes/70000?seed=3"), tmp_path / "a.mp3", allow_private=True, max_bytes=1 << 20
        )
        assert (result.bytes, result.sha256) == (70_000, sha256_of(70_000, 3))
        data, ctype = await fetch_bytes(assets.url("/bytes/5000?type=image/jpeg"), allow_private=True, max_bytes=9000)
        assert (data, ctype) == (body(5000), "image/jpeg")
        with pytest.raises(Refused):
            await fetch_bytes(f"http://127.0.0.1:{canary.port}/x.jpg", allow_private=False, max_bytes=9000)
        with pytest.raises(FetchError, match="more than"):
            await fetch_bytes(assets.url("/bytes/10000"), allow_private=True, max_bytes=9000)

    asyncio.run(run())
    assert canary.connections == 0


def test_a_server_hanging_up_mid_body_leaves_a_part_that_resumes(assets: AssetServer, tmp_path: Path) -> None:
    """A connection cut before Content-Length is reached is a retryable failure; the next attempt resumes."""
    url = assets.url("/trickle/2000000?chunk=100000&delay=0&cut=700000")
    with pytest.raises(FetchError, match="bad HTTP response") as caught:
        fetch_to_file_sync(url, tmp_path / "a.mp3", loose())
    assert caught.value.retry is True
    assert not (tmp_path / "a.mp3").exists()
    result = fetch_to_file_sync(url, tmp_path / "a.mp3", loose())
    assert result.resumed_from == 700_000
    assert (result.bytes, result.sha256) == (2_000_000, sha256_of(2_000_000))
