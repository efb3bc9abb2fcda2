"""The admin listener of a real relay over HTTP: foreign Hosts refused everywhere, the event stream, basic auth."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.web.passwords import hash_password
from tests.conftest import TOKEN, RelayProcess, build_relay, end_relay, wait_for
from tests.family import FAMILY, music

ROUTES = [
    "/",
    "/?q=web&state=complete",
    "/tasks/web1",
    "/tasks/a%2Fb",
    "/task?id=..",
    "/deliveries/3",
    "/rejected",
    "/partials/card?task=web1",
    "/partials/task?task=web1",
    "/partials/overview",
    "/events",
    "/api/callbacks",
    "/api/rejected",
    "/api/tasks/web1",
    "/api/tasks/a/b",
    "/api/deliveries/1/curl",
    "/api/url",
    "/healthz",
    "/metrics",
    "/static/relay.js",
    "/static/relay.css",
    "/no/such/page",
]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the module, with a task, a task id holding a slash, and a delivery without a task id."""
    started = build_relay(tmp_path_factory.mktemp("admin"), admin={"allowed_hosts": ["relay.home.arpa"]})
    try:
        bodies = [
            music("complete", "web1"),
            music("complete", "a/b"),
            FAMILY["non-object-root"][0],
            music("first", ".."),
        ]
        for body in bodies:
            assert started.post(body).status_code == 200
        yield started
    finally:
        end_relay(started)


def get(relay: RelayProcess, path: str, host: str | None = None, **headers: str) -> httpx.Response:
    """GET on the admin listener, reading at most the head of an event stream."""
    if host:
        headers["host"] = host
    with httpx.stream("GET", relay.admin + path, headers=headers, timeout=30) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # its body never ends; the status and headers are what is checked
        response.read()
        return response


@pytest.mark.parametrize("path", ROUTES)
def test_a_foreign_host_is_refused_on_every_route(relay: RelayProcess, path: str) -> None:
    """`Host: evil.example` gets 421 on every admin route (DNS rebinding); its own address and allowed names work."""
    refused = get(relay, path, "evil.example")
    assert refused.status_code == 421
    assert TOKEN not in refused.text
    expected = 404 if path == "/no/such/page" else 200
    for host in (None, f"localhost:{relay.admin_port}", "relay.home.arpa"):
        assert get(relay, path, host).status_code == expected, host


def test_a_post_from_another_site_is_refused(relay: RelayProcess) -> None:
    """A request that changes something and carries another site's Origin gets 403."""
    response = httpx.post(relay.admin + "/", headers={"origin": "http://evil.example"})
    assert response.status_code == 403


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self.styles = 0
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.inline_scripts += 1
        self.handlers += [k for k in names if k.startswith("on")]
        self.styles += "style" in names or tag == "style"
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]


@pytest.mark.parametrize("path", ["/", "/tasks/web1", "/tasks/a%2Fb", "/deliveries/3", "/rejected"])
def test_pages_have_no_inline_script_and_no_external_resource(relay: RelayProcess, path: str) -> None:
    """No inline script, handler or style; the CSP forbids them; links are http(s) or relay's own paths."""
    response = get(relay, path)
    assert response.status_code == 200
    markup = _Markup()
    markup.feed(response.text)
    assert (markup.inline_scripts, markup.handlers, markup.styles) == (0, [], 0)
    assert all(u.startswith(("/", "#", "http://", "https://")) and not u.startswith("//") for u in markup.urls)
    assert [u for u in markup.urls if u.startswith(("/static", "http")) and "relay." in u] == [
        "/static/relay.css",
        "/static/relay.js",
    ]
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "unsafe" not in csp


def test_task_ids_with_slashes_reach_their_task(relay: RelayProcess) -> None:
    """`/tasks/a%2Fb` and `/api/tasks/a/b` are task `a/b`; the index links to it quoted."""
    assert 'href="/tasks/a%2Fb"' in get(relay, "/").text
    assert json.loads(get(relay, "/api/tasks/a/b").text)["task_id"] == "a/b"
    assert '<code id="task-id">a/b</code>' in get(relay, "/tasks/a%2Fb").text


def read_events(
    relay: RelayProcess,
    count: int,
    headers: dict[str, str] | None = None,
    after: str = "",
    opened: threading.Event | None = None,
) -> list[str]:
    """The first `count` events of a stream, as raw text blocks (`after` is the ?after= parameter)."""
    blocks: list[str] = []
    url = relay.admin + "/events" + (f"?after={after}" if after else "")
    with httpx.stream("GET", url, headers=headers or {}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        for text in response.iter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                blocks.append(block)
                if opened is not None:
                    opened.set()
                if len(blocks) >= count:
                    return blocks
    return blocks


def test_event_stream_sends_retry_and_catches_up_by_id(relay: RelayProcess) -> None:
    """The stream starts with `retry:`; a page that saw delivery N gets N+1… first, with ids, no payload."""
    newest = wait_for(lambda: max((d["id"] for d in relay.deliveries()), default=0))
    relay.post(music("complete", task="missed-1"))
    relay.post(music("complete", task="missed-2"))
    wait_for(lambda: max(d["id"] for d in relay.deliveries()) == newest + 2)
    blocks = read_events(relay, 3, {"last-event-id": str(newest)})
    assert blocks[0].startswith("retry: 2000")
    assert [b.split("\n")[0] for b in blocks[1:]] == [f"id: {newest + 1}", f"id: {newest + 2}"]
    data = json.loads(blocks[1].split("data: ", 1)[1])
    assert data["task_id"] == "missed-1"
    assert "payload" not in data
    assert read_events(relay, 2, after=str(newest + 1))[1].startswith(f"id: {newest + 2}")


def test_event_stream_tells_of_new_deliveries_and_alerts(make_relay: Any, capture: Any) -> None:
    """A delivery recorded while a stream is open arrives as an event, and its alert's progress as job events."""
    relay = make_relay(notify={"urls": [f"json://127.0.0.1:{capture.port}/"]})
    got: list[str] = []
    opened = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(read_events(relay, 4, opened=opened)), daemon=True)
    reader.start()
    assert opened.wait(30)  # subscribed: job events are not replayed, so the POST waits for the stream
    relay.post(music("complete", task="live"))
    reader.join(60)
    names = [next(line for line in b.split("\n") if line.startswith("event:")) for b in got[1:]]
    assert names[0] == "event: delivery"
    assert "event: job" in names
    assert any('"state":"sent"' in b for b in got)


def test_shutdown_ends_open_streams(make_relay: Any) -> None:
    """SIGTERM with an event stream open: relay ends the stream and exits 0 well before the 20 s drain timeout."""
    relay = make_relay()
    with httpx.stream("GET", relay.admin + "/events", timeout=30) as response:
        chunks = response.iter_text()
        assert next(chunks).startswith("retry:")
        started = time.monotonic()
        relay.proc.terminate()
        "".join(chunks)  # returns once the server has closed the stream
        ended = time.monotonic() - started
    assert relay.proc.wait(30) == 0
    assert ended < 15, f"the stream held the shutdown for {ended:.1f} s"


def test_basic_auth_on_a_real_relay(make_relay: Any) -> None:
    """With a password set, pages and API answer 401 without it, 200 with it; /healthz stays open; the CLI logs in."""
    relay = make_relay(admin={"username": "me", "password_hash": hash_password("long enough")})
    assert httpx.get(relay.admin + "/").status_code == 401
    assert httpx.get(relay.admin + "/api/url", auth=("me", "wrong")).status_code == 401
    assert httpx.get(relay.admin + "/api/url", auth=("me", "long enough")).status_code == 200
    assert httpx.get(relay.admin + "/healthz").status_code == 200
    relay.post(music("complete", "auth1"))
    for command in (("url",), ("replay", "1")):
        refused = relay.cli(*command)
        assert refused.returncode == 1
        assert "set RELAY_ADMIN_PASSWORD" in refused.stderr
    relay.env["RELAY_ADMIN_PASSWORD"] = "long enough"
    assert relay.cli("url", check=True).stdout.strip() == "https://relay.example.test/callback/" + TOKEN
    assert "RELAY_ADMIN_PASSWORD" not in relay.cli("replay", "1").stderr  # past the password: nothing to forward to


def test_refuses_an_admin_listener_beyond_loopback_without_a_password(make_relay: Any, tmp_path: Path) -> None:
    """`admin.host = "0.0.0.0"` without username and password_hash: one line naming the key, exit 3, nothing bound."""
    relay = make_relay(start=False, admin={"host": "0.0.0.0"})
    result = relay.cli("serve")
    assert result.returncode == 3
    assert "admin.host" in result.stderr
    assert "relay hash-password" in result.stderr
    assert "Traceback" not in result.stderr
