"""Alerts as the capture servers receive them: notify type, title, cover attachment, reasons, masked targets."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from relay.alerts import AlertSender
from relay.config import NotifySettings
from relay.covers import Covers, as_image, make_fetcher
from relay.jobs import Job
from relay.messages import build
from relay.metrics import Metrics
from relay.outbox import AlertKind
from relay.payloads import extract
from tests.conftest import CaptureServer, free_port, wait_for
from tests.family import FAMILY, TRACK, music


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image of a few grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


COVER = png()


class ImageServer:
    """Serves COVER on 127.0.0.1 and counts the requests it got."""

    def __init__(self) -> None:
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(COVER)))
                self.end_headers()
                self.wfile.write(COVER)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/cover.png"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """A loopback server holding the cover image."""
    server = ImageServer()
    yield server
    server.close()


def json_url(server: CaptureServer, path: str = "hook") -> str:
    return f"json://127.0.0.1:{server.port}/{path}"


def with_cover(task: str, cover: str) -> dict[str, Any]:
    """A complete music callback whose track's cover is `cover`."""
    return music(task=task, tracks=[{**TRACK, "image_url": cover}])


def test_alerts_carry_type_title_cover_and_link(make_relay: Any, capture: CaptureServer, image_server: Any) -> None:
    """json:// receives SUCCESS with the cover attached and a task link, FAILURE with the reason in the title."""
    relay = make_relay(
        notify={
            "urls": [json_url(capture)],
            "attach_covers": True,
            "cover_allow_private": True,
            "link_base": "http://nas.example.test:8081",
        }
    )
    relay.post(with_cover("ok1", image_server.url))
    relay.post(FAMILY["music-error-null-data"][0])
    bodies = wait_for(lambda: len(capture.requests) == 2 and capture.json_bodies(), timeout=60)
    success = next(b for b in bodies if b["type"] == "success")
    assert success["title"] == "✅ Music ready: Iron Man"
    assert [a["mimetype"] for a in success["attachments"]] == ["image/png"]
    assert base64.b64decode(success["attachments"][0]["base64"]) == COVER
    assert "http://nas.example.test:8081/tasks/ok1" in success["message"]
    failure = next(b for b in bodies if b["type"] == "failure")
    assert failure["title"] == "❌ Music failed: task e1 · 451 source audio unreachable"
    assert failure["attachments"] == []
    docs = [__import__("json").loads(line) for line in relay.cli("log", "--json", check=True).stdout.splitlines()]
    assert [d["alert"]["state"] for d in docs] == ["sent", "sent"]  # `relay log --json` carries the alert state


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_email_carries_the_cover_as_a_mime_part(make_relay: Any, smtp: Any, image_server: Any) -> None:
    """mailto:// into aiosmtpd: the email holds the cover image as an image/png part."""
    relay = make_relay(
        notify={
            "urls": [f"mailto://127.0.0.1:{smtp.port}?from=relay@example.com&to=me@example.com&mode=insecure"],
            "attach_covers": True,
            "cover_allow_private": True,
        }
    )
    relay.post(with_cover("mail1", image_server.url))
    raw = wait_for(lambda: smtp.messages, timeout=60)[0]
    parsed: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)
    images = [part for part in parsed.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0].get_payload(decode=True) == COVER
    assert "Iron Man" in parsed["Subject"]


def test_a_private_cover_is_not_fetched_unless_allowed(
    make_relay: Any, capture: CaptureServer, image_server: Any
) -> None:
    """Without cover_allow_private a loopback cover is refused before any request; the alert goes without it."""
    relay = make_relay(notify={"urls": [json_url(capture)], "attach_covers": True})
    relay.post(with_cover("priv1", image_server.url))
    body = wait_for(capture.json_bodies, timeout=60)[0]
    assert body["attachments"] == []
    assert image_server.hits == 0


@pytest.mark.parametrize(
    "spelling", ["http://127.0.0.1:{port}/c.png", "http://localhost:{port}/c.png", "http://[::1]:{port}/c.png"]
)
def test_the_minimal_fetcher_refuses_loopback_before_connecting(spelling: str, image_server: Any) -> None:
    """Loopback spellings are refused without a request; allowed, the bytes arrive."""
    port = image_server.url.split(":")[2].split("/")[0]
    url = spelling.format(port=port)
    with pytest.raises(ValueError, match="refused"):
        asyncio.run(make_fetcher(allow_private=False)(url))
    assert image_server.hits == 0
    assert asyncio.run(make_fetcher(allow_private=True)(image_server.url)) == COVER


def _alert_kind(capture: CaptureServer, covers: Covers) -> tuple[AlertKind, Job]:
    settings = NotifySettings(urls=(SecretStr(json_url(capture)),))
    kind = AlertKind(AlertSender.from_settings(settings), settings, Metrics(), covers)
    message = build({**extract(with_cover("c1", "http://cover.example.test/c.png")).as_fields(), "task_state": None})
    spec = kind.spec(message, "k1", "c1", 1)
    return kind, Job(1, "k1", spec.data, "c1", 1, time.time(), 0)


def test_a_cover_that_cannot_be_had_never_holds_the_alert(capture: CaptureServer) -> None:
    """A cover fetch that hangs is given up after the cover timeout; the alert goes out without a picture."""

    async def hang(url: str) -> bytes | None:
        await asyncio.sleep(3600)
        return None

    kind, job = _alert_kind(capture, Covers(hang, timeout=0.3))
    started = time.monotonic()
    [attempt] = asyncio.run(kind.perform(kind.sender.targets[0].key, [job]))
    assert attempt.ok
    assert time.monotonic() - started < 30
    assert capture.json_bodies()[0]["attachments"] == []


def test_a_send_that_fails_with_the_picture_is_tried_without(capture: CaptureServer) -> None:
    """If a service refuses the send with the picture attached, the same attempt sends the alert without it."""

    async def cover(url: str) -> bytes | None:
        return COVER

    capture.fail_next = 1
    kind, job = _alert_kind(capture, Covers(cover))
    [attempt] = asyncio.run(kind.perform(kind.sender.targets[0].key, [job]))
    assert attempt.ok
    assert [b["attachments"] for b in capture.json_bodies()] == [[]]


def test_only_pictures_are_attached() -> None:
    """Bytes that are not PNG, JPEG, GIF or WebP (an error page) or too large are not attached."""
    assert as_image(COVER) is not None
    assert as_image(COVER).mimetype == "image/png"
    assert as_image(b"<html>404</html>") is None
    assert as_image(b"\xff\xd8\xff" + b"\0" * 3_000_000) is None


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    """An aiosmtpd server on 127.0.0.1 that refuses every login with 535."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    def deny(*args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port(), authenticator=deny, auth_require_tls=False)
    controller.start()
    yield controller.port
    controller.stop()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_notify_test_says_why_each_target_failed(
    make_relay: Any, capture: CaptureServer, refusing_smtp: int
) -> None:
    """A refused login, a closed port and a hanging server each print their own reason; URLs are masked."""
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts connections (the kernel does) and never answers
    try:
        relay = make_relay(
            start=False,
            notify={
                "urls": [
                    json_url(capture, "works-fine"),
                    "json://127.0.0.1:1/closed-secret-path",
                    f"json://127.0.0.1:{hanging.getsockname()[1]}/hangs?rto=1&cto=1",
                    f"mailto://alice:hunter22@127.0.0.1:{refusing_smtp}?mode=insecure&from=r@example.com&to=me@example.com",
                ],
                "timeout": 20,
            },
        )
        result = relay.cli("notify-test")
    finally:
        hanging.close()
    out = result.stdout
    assert result.returncode == 1
    assert out.splitlines()[0] == f"ok      json://127.0.0.1:{capture.port}/w...e"
    assert "Connection refused" in out
    assert "read timed out" in out
    assert "535 5.7.8 Authentication credentials invalid" in out
    assert "the target refused or could not be reached" not in out
    for secret in ("closed-secret-path", "hunter22", "alice", "works-fine"):
        assert secret not in out + result.stderr


def test_a_failing_target_shows_its_reason_masked_everywhere(make_relay: Any, capture: CaptureServer) -> None:
    """The reason and the masked target reach `relay show`, the task page, /api/tasks, `relay log --json` and the
    outbox's log lines; the secret path appears in none of them."""
    capture.fail_next = 10_000
    relay = make_relay(notify={"urls": [json_url(capture, "very-secret-topic")]})
    relay.post(music(task="why1"))
    shown = wait_for(lambda: "error=500" in (out := relay.cli("show", "why1").stdout) and out, timeout=60)
    masked = f"json://127.0.0.1:{capture.port}/v...c"
    assert f"{masked}: pending after" in shown
    api = httpx.get(f"{relay.admin}/api/tasks/why1").json()
    assert api["alerts"][0]["targets"][0]["target"] == masked
    assert "error=500" in api["alerts"][0]["targets"][0]["error"]
    page = httpx.get(f"{relay.admin}/tasks/why1").text
    assert masked in page
    assert "error=500" in page
    logged = relay.cli("log", "--json", check=True).stdout
    assert masked in logged
    relay.stop()
    output = relay.read_output()
    assert f"alert to {masked} failed (attempt 1): Failed to send JSON POST notification" in output
    for text in (shown, str(api), page, logged, output):
        assert "very-secret-topic" not in text


def test_a_complete_after_an_error_is_alerted(make_relay: Any, capture: CaptureServer) -> None:
    """An `error` and then a `complete` of the same task alert twice: the failure, then the tracks."""
    relay = make_relay(notify={"urls": [json_url(capture)]})
    error = {"code": 501, "msg": "Generation failed", "data": {"callbackType": "error", "task_id": "late"}}
    relay.post(error)
    wait_for(lambda: len(capture.requests) == 1, timeout=60)
    relay.post(music(task="late"))
    bodies = wait_for(lambda: len(capture.requests) == 2 and capture.json_bodies(), timeout=60)
    assert [b["type"] for b in bodies] == ["failure", "success"]
    assert bodies[1]["title"] == "✅ Music ready: Iron Man"
    assert relay.cli("show", "late").stdout.startswith("task late: complete")


def test_a_dying_target_is_reported_to_the_others(make_relay: Any, capture: CaptureServer) -> None:
    """When relay gives up a target's alerts, the other targets get a WARNING naming it (masked) and why."""
    relay = make_relay(
        notify={"urls": [json_url(capture, "healthy"), "json://127.0.0.1:1/dead-target"], "give_up_after": 0.0005}
    )
    relay.post(music(task="dying"))
    warning = wait_for(lambda: [b for b in capture.json_bodies() if b["type"] == "warning"], timeout=60)[0]
    assert warning["title"].startswith("⚠️ relay gave up alerts to json://127.0.0.1:1/d...t")
    assert "Connection refused" in warning["message"]
    assert "dead-target" not in str(capture.json_bodies())


def test_the_archived_copy_is_used_before_fetching(tmp_path: Any) -> None:
    """A cover another job kind (the archive) already downloaded is attached from disk; nothing is fetched."""
    from relay.outbox import archived_cover

    saved = tmp_path / "cover.png"
    saved.write_bytes(COVER)
    url = "https://cdn.example.test/c.png"

    class Queue:
        kinds = {"alerts": None, "downloads": None}

        def for_task(self, kind: str, task_id: str) -> list[dict[str, Any]]:
            if kind != "downloads" or task_id != "t1":
                return []
            return [{"key": url, "targets": [{"key": "archive", "state": "done", "path": str(saved)}]}]

    fetched: list[str] = []

    async def fetch(asked: str) -> bytes | None:
        fetched.append(asked)
        return None

    covers = Covers(fetch, archived_cover(Queue()))  # type: ignore[arg-type]
    image = asyncio.run(covers.image(url, "t1"))
    assert image is not None
    assert image.data == COVER
    assert fetched == []
    assert asyncio.run(covers.image("https://cdn.example.test/other.png", "t1")) is None
    assert fetched == ["https://cdn.example.test/other.png"]


def test_a_target_that_never_answers_is_cut_off_at_notify_timeout() -> None:
    """A server that accepts and never answers: the send ends after notify.timeout with that as its reason."""
    from relay.messages import test_message

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)
    try:
        url = f"json://127.0.0.1:{hanging.getsockname()[1]}/quiet?rto=3&cto=3"
        sender = AlertSender.from_settings(NotifySettings(urls=(SecretStr(url),), timeout=0.5))
        result = asyncio.run(sender.send(sender.targets[0], test_message()))
    finally:
        hanging.close()
    assert not result.ok
    assert result.error == "no answer within 0.5 s"
