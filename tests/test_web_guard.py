"""The admin listener's guards in-process: Host allow-list, Origin, basic auth, headers, passwords, config, events."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from relay.cli import cli
from relay.config import parse_settings
from relay.errors import CONFIG_ERROR, ConfigError
from relay.web import events
from relay.web.events import Event, EventBroker, parse_after
from relay.web.guard import AdminGuard, host_allowed
from relay.web.passwords import check_hash, hash_password, verify_password

FAST = {"n": 2**4, "r": 1, "p": 1}  # cheap parameters keep the tests quick; the format is the same
HASH = hash_password("correct horse", **FAST)


class Guarded:
    """A tiny app behind the guard, reached in-process as http://127.0.0.1:8081 (the listener's own address)."""

    def __init__(self, **guard: Any) -> None:
        async def ok(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/", ok, methods=["GET", "POST"]), Route("/healthz", ok)])
        self.app = AdminGuard(app, **guard)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """One request through the guard."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8081") as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(send())

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """A GET through the guard."""
        return self.request("GET", path, headers)


def guarded(**guard: Any) -> Guarded:
    """The app behind a guard configured with `guard`."""
    return Guarded(**guard)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8081", True),
        ("127.0.0.1", True),
        ("localhost:8081", True),
        ("LOCALHOST", True),
        ("relay.home.arpa:8081", True),
        ("evil.example", False),
        ("evil.example:8081", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.example", False),
        ("[::1]:8081", False),
        ("", False),
    ],
)
def test_host_allow_list(host: str, allowed: bool) -> None:
    """Only the listener's own address, localhost and configured names pass (421 otherwise)."""
    client = guarded(allowed_hosts=["relay.home.arpa"])
    response = client.get("/", headers={"host": host})
    assert response.status_code == (200 if allowed else 421)
    assert host_allowed(host, {"127.0.0.1"}, {"relay.home.arpa"}) is allowed


def test_ipv6_own_address() -> None:
    """Bracketed IPv6 Host headers match an IPv6 listener address."""
    assert host_allowed("[::1]:8081", {"::1"}, set())
    assert not host_allowed("[::2]:8081", {"::1"}, set())


@pytest.mark.parametrize(
    ("method", "origin", "status"),
    [
        ("POST", "http://evil.example", 403),
        ("POST", "http://127.0.0.1:8081", 200),
        ("POST", None, 200),
        ("POST", "null", 403),
        ("GET", "http://evil.example", 200),
    ],
    ids=["foreign-post", "own-post", "no-origin", "null-origin", "foreign-get"],
)
def test_requests_that_change_something_come_from_relays_own_page(method: str, origin: str | None, status: int) -> None:
    """A POST carrying another site's Origin is refused."""
    headers = {"origin": origin} if origin else {}
    assert guarded().request(method, "/", headers=headers).status_code == status


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header."""
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (basic("me", "correct horse"), 200),
        (basic("me", "wrong horse"), 401),
        (basic("you", "correct horse"), 401),
        ({"authorization": "Basic !!notbase64"}, 401),
        ({"authorization": "Bearer x"}, 401),
    ],
    ids=["none", "right", "wrong-password", "wrong-user", "garbage", "other-scheme"],
)
def test_basic_auth(headers: dict[str, str], status: int) -> None:
    """With admin.username set, every route but /healthz asks for the password."""
    client = guarded(auth=("me", HASH))
    response = client.get("/", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic realm=")
    assert client.get("/healthz").status_code == 200


def test_security_headers_on_every_answer() -> None:
    """A strict CSP (no inline script, nothing external but media) and friends, on answers and refusals alike."""
    client = guarded()
    for response in (client.get("/"), client.get("/", headers={"host": "evil.example"})):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "default-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_passwords() -> None:
    """Hashes are salted, verify only the right password, and say why a malformed one is refused."""
    assert verify_password(HASH, "correct horse")
    assert not verify_password(HASH, "correct horsE")
    assert hash_password("x", **FAST) != hash_password("x", **FAST)
    assert HASH.startswith("scrypt$16$1$1$")
    assert not verify_password("plain", "plain")
    for bad in ("plain", "scrypt$16$1$1$salt", "scrypt$15$1$1$c2FsdHNhbHQ$" + "A" * 43, "bcrypt$x$y$z$a$b"):
        with pytest.raises(ValueError, match="hash"):
            check_hash(bad)


@pytest.mark.parametrize(
    ("admin", "problem"),
    [
        ({"host": "0.0.0.0"}, "admin.host: '0.0.0.0' reaches beyond this machine"),
        ({"host": "::"}, "admin.host: '::' reaches beyond this machine"),
        ({"host": "relay.lan"}, "admin.host: 'relay.lan' reaches beyond this machine"),
        ({"username": "me"}, "admin.username and admin.password_hash go together"),
        ({"password_hash": HASH}, "admin.username and admin.password_hash go together"),
        ({"username": "me", "password_hash": "hunter2-plain"}, "admin.password_hash: is not a hash"),
        ({"allowed_hosts": ["http://relay.lan"]}, "admin.allowed_hosts: 'http://relay.lan' is not"),
        ({"allowed_hosts": ["relay.lan:8081"]}, "is not a host name"),
    ],
    ids=["any-v4", "any-v6", "a-name", "user-only", "hash-only", "plain-password", "scheme", "port"],
)
def test_admin_config_is_refused_with_the_key(admin: dict[str, Any], problem: str) -> None:
    """A listener beyond loopback without a password, or a bad auth setting, is a config error (exit 3)."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"admin": admin}, env={})
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.exit_code == CONFIG_ERROR


@pytest.mark.parametrize(
    "admin",
    [
        {"host": "127.0.0.1"},
        {"host": "127.0.0.2"},
        {"host": "::1"},
        {"host": "localhost"},
        {"host": "0.0.0.0", "username": "me", "password_hash": HASH},
        {"allowed_hosts": ["Relay.Home.Arpa", "[::1]", "127.0.0.1"]},
    ],
    ids=["v4-loopback", "other-loopback", "v6-loopback", "localhost", "any-with-auth", "names"],
)
def test_admin_config_accepted(admin: dict[str, Any]) -> None:
    """Loopback needs no password; anything else is fine with one; names are normalized."""
    settings = parse_settings({"admin": admin}, env={})
    if "allowed_hosts" in admin:
        assert settings.admin.allowed_hosts == ("relay.home.arpa", "::1", "127.0.0.1")


def test_hash_password_command() -> None:
    """`relay hash-password` asks twice without echo, or reads stdin, and prints a hash that verifies."""
    runner = CliRunner()
    asked = runner.invoke(cli, ["hash-password"], input="long enough\nlong enough\n")
    assert asked.exit_code == 0, asked.output
    assert verify_password(asked.stdout.strip().splitlines()[-1], "long enough")
    piped = runner.invoke(cli, ["hash-password", "--stdin"], input="another one\n")
    assert verify_password(piped.stdout.strip(), "another one")
    short = runner.invoke(cli, ["hash-password", "--stdin"], input="short\n")
    assert short.exit_code == 1
    assert "at least 8" in short.output


# -- events ----------------------------------------------------------------------------------------------------------


def test_event_encoding() -> None:
    """An event is id, name and one JSON data line (newlines in values stay escaped)."""
    event = Event("delivery", {"task_id": "a\nb"}, 7)
    assert event.encode() == b'id: 7\nevent: delivery\ndata: {"task_id":"a\\nb"}\n\n'
    assert Event("job", {}).encode() == b"event: job\ndata: {}\n\n"


@pytest.mark.parametrize(
    ("header", "param", "after"),
    [("12", None, 12), (None, "5", 5), ("12", "5", 12), ("x", "5", 5), (None, None, None), ("-1", None, None)],
)
def test_parse_after(header: str | None, param: str | None, after: int | None) -> None:
    """Last-Event-ID wins over ?after=; junk is ignored."""
    assert parse_after(header, param) == after


def test_broker_replays_the_backlog_then_streams_live_and_ends_on_close() -> None:
    """A reconnecting page gets what it missed once (no repeats), then live events; close() ends every stream."""

    async def scenario() -> list[bytes]:
        broker = EventBroker()
        backlog = [{"id": 4, "task_id": "a"}, {"id": 5, "task_id": "b"}]

        async def read_backlog(after: int) -> list[dict[str, Any]]:
            assert after == 3
            broker.delivery({"id": 5, "task_id": "b"})  # recorded while the backlog was read: sent once
            broker.delivery({"id": 6, "task_id": "c"})
            return backlog

        stream = broker.stream(3, read_backlog)
        got = [await anext(stream) for _ in range(4)]
        broker.job("alerts", {"task_id": "c", "state": "sent"})
        got.append(await anext(stream))
        broker.close()
        got += [chunk async for chunk in stream]
        assert broker.clients == 0
        return got

    chunks = asyncio.run(scenario())
    assert chunks[0].startswith(b"retry: 2000\n")
    assert [c.split(b"\n")[0] for c in chunks[1:4]] == [b"id: 4", b"id: 5", b"id: 6"]
    assert chunks[4].startswith(b"event: job\n")
    assert len(chunks) == 5


def test_a_page_that_falls_behind_is_dropped_and_catches_up_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose queue overflows ends (the page reconnects with its last id) instead of growing memory."""
    monkeypatch.setattr(events, "QUEUE", 3)

    async def scenario() -> list[bytes]:
        broker = EventBroker()
        stream = broker.stream(None, lambda after: asyncio.sleep(0, []))
        first = await anext(stream)
        for n in range(1, 10):
            broker.delivery({"id": n, "task_id": "t"})
        return [first] + [chunk async for chunk in stream]

    chunks = asyncio.run(scenario())
    assert len(chunks) == 1
