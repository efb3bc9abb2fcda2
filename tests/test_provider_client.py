"""The provider client's reading of answers and errors, its retries and rate limit, and the pure helpers beside it.

In-process tables: the provider's side is an httpx MockTransport here; the loopback fake provider is used by the
tests that run relay itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from relay.provider import client as client_module
from relay.provider import operations, signature
from relay.provider.client import (
    ProviderClient,
    ProviderRefused,
    ProviderStopped,
    ProviderUnavailable,
    RateLimiter,
)

KEY = "pk-secret-key-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


def _json(body: Any, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def _text(text: str, status: int = 200, content_type: str = "text/plain") -> Handler:
    return lambda request: httpx.Response(status, text=text, headers={"content-type": content_type})


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def run(handler: Handler, key: str = KEY, call: str = "poll", retries: int = 0) -> tuple[Any, list[httpx.Request]]:
    """Make one client call against `handler`; returns (result or exception, requests seen)."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def go() -> Any:
        transport = httpx.MockTransport(recording)
        async with ProviderClient("http://127.0.0.1:9", key, rate_limit=1000, transport=transport) as client:
            try:
                if call == "poll":
                    return await client.record_info("music", "t1", retries=retries)
                return await client.submit(operations.find("upload-extend"), {"a": 1}, retries=retries)
            except Exception as exc:
                return exc

    return asyncio.run(go()), seen


HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"

# name -> (handler, expected exception class or None for success, expected code)
ANSWERS: dict[str, tuple[Handler, type[Exception] | None, int | None]] = {
    "ok": (_json({"code": 200, "msg": "success", "data": {"taskId": "t1"}}), None, 200),
    "ok-code-as-string": (_json({"code": "200", "msg": "success", "data": {}}), None, 200),
    "code-401-bad-key": (_json({"code": 401, "msg": "Unauthorized"}), ProviderStopped, 401),
    "http-401-html": (_text(HTML, 401, "text/html"), ProviderStopped, 401),
    "code-429-no-credits": (_json({"code": 429, "msg": "Insufficient credits"}), ProviderStopped, 429),
    "code-405-rate-limited": (_json({"code": 405, "msg": "rate limit"}), ProviderUnavailable, 405),
    "code-430-too-frequent": (_json({"code": 430, "msg": "call frequency too high"}), ProviderUnavailable, 430),
    "code-455-maintenance": (_json({"code": 455, "msg": "maintenance"}), ProviderUnavailable, 455),
    "http-200-code-500": (_json({"code": 500, "msg": "Server Error"}), ProviderUnavailable, 500),
    "http-500-code-200": (_json({"code": 200, "msg": "?"}, 500), ProviderUnavailable, 500),
    "http-503-code-455": (_json({"code": 455, "msg": "maintenance"}, 503), ProviderUnavailable, 455),
    "http-502-html-page": (_text(HTML, 502, "text/html"), ProviderUnavailable, 502),
    "http-200-html-page": (_text(HTML, 200, "text/html"), ProviderUnavailable, None),
    "http-200-not-json": (_text("Service temporarily unavailable"), ProviderUnavailable, None),
    "json-without-code": (_json({"msg": "hello"}), ProviderUnavailable, None),
    "json-not-an-object": (_json(["x"]), ProviderUnavailable, None),
    "json-with-nan": (_text('{"code": 200, "data": NaN}'), ProviderUnavailable, None),
    "empty-body": (_text(""), ProviderUnavailable, None),
    "code-400-bad-params": (_json({"code": 400, "msg": "taskId is required"}), ProviderRefused, 400),
    "code-422-unknown-task": (_json({"code": 422, "msg": "recordInfo is null"}), ProviderRefused, 422),
    "http-404-html-wrong-base-url": (_text(HTML, 404, "text/html"), ProviderRefused, 404),
    "connection-refused": (_raise(httpx.ConnectError("refused")), ProviderUnavailable, None),
    "read-timeout-slow-answer": (_raise(httpx.ReadTimeout("slow")), ProviderUnavailable, None),
    "broken-connection": (_raise(httpx.RemoteProtocolError("eof")), ProviderUnavailable, None),
}


@pytest.mark.parametrize(("handler", "expected", "code"), list(ANSWERS.values()), ids=list(ANSWERS))
def test_answers_and_errors_are_classified(
    handler: Handler, expected: type[Exception] | None, code: int | None
) -> None:
    """The envelope's code decides, not only the HTTP status: stop, retry later, refused or fine."""
    result, seen = run(handler)
    assert len(seen) == 1
    if expected is None:
        assert as_code(result) == code
    else:
        assert type(result) is expected, result
        assert result.code == code
        assert KEY not in str(result)


def as_code(answer: dict[str, Any]) -> int:
    return int(answer["code"])


def test_bearer_key_is_sent_and_task_id_is_a_query_parameter() -> None:
    """Every call carries `Authorization: Bearer <key>`; polls are GETs with `?taskId=`."""
    _, seen = run(_json({"code": 200, "data": {}}))
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/api/v1/generate/record-info"
    assert seen[0].url.params["taskId"] == "t1"


@pytest.mark.parametrize("code", [401, 429])
def test_stop_messages_say_what_to_do_and_never_echo_the_key(code: int) -> None:
    """401/429 say what to do; a provider message echoing the key is scrubbed."""
    result, _ = run(_json({"code": code, "msg": f"key {KEY} refused"}))
    assert isinstance(result, ProviderStopped)
    assert KEY not in str(result)
    assert ("RELAY_PROVIDER_KEY" if code == 401 else "credits") in str(result)


def test_no_key_stops_without_a_request() -> None:
    """Without an API key nothing is sent, and the message says how to set one."""
    result, seen = run(_json({"code": 200}), key="")
    assert isinstance(result, ProviderStopped)
    assert "RELAY_PROVIDER_KEY" in str(result)
    assert seen == []


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff delays of a hundredth of a second, so retry tests take no time."""
    monkeypatch.setattr(client_module, "backoff", lambda attempt, base=1.0, cap=60.0: 0.01)


def sequence(*handlers: Handler) -> Handler:
    """Answer with each handler in turn (the last one repeats)."""
    calls = iter(range(10_000))

    def handler(request: httpx.Request) -> httpx.Response:
        return handlers[min(next(calls), len(handlers) - 1)](request)

    return handler


OK_SUBMIT = _json({"code": 200, "msg": "success", "data": {"taskId": "new-task"}})


@pytest.mark.usefixtures("no_wait")
@pytest.mark.parametrize(
    ("first", "call", "requests", "succeeds"),
    [
        (_json({"code": 430, "msg": "slow down"}), "poll", 2, True),
        (_json({"code": 500, "msg": "oops"}), "poll", 2, True),
        (_raise(httpx.ReadTimeout("slow")), "poll", 2, True),
        (_json({"code": 430, "msg": "slow down"}), "submit", 2, True),
        (_json({"code": 455, "msg": "maintenance"}), "submit", 2, True),
        (_raise(httpx.ConnectError("refused")), "submit", 2, True),
        (_json({"code": 500, "msg": "oops"}), "submit", 1, False),
        (_raise(httpx.ReadTimeout("slow")), "submit", 1, False),
        (_json({"code": 401, "msg": "bad key"}), "poll", 1, False),
        (_json({"code": 400, "msg": "bad"}), "poll", 1, False),
    ],
    ids=[
        "poll-rate-limited",
        "poll-server-error",
        "poll-timeout",
        "submit-rate-limited",
        "submit-maintenance",
        "submit-never-sent",
        "submit-server-error-may-have-created-it",
        "submit-timeout-may-have-created-it",
        "stop-is-not-retried",
        "refusal-is-not-retried",
    ],
)
def test_retries_only_what_is_safe_to_repeat(first: Handler, call: str, requests: int, succeeds: bool) -> None:
    """Polls are retried on any transient failure; a submit only when it surely created no task."""
    result, seen = run(sequence(first, OK_SUBMIT), call=call, retries=3)
    assert len(seen) == requests
    assert isinstance(result, Exception) is not succeeds


def test_submit_without_task_id_is_refused() -> None:
    """Code 200 without data.taskId is an answer relay cannot use: say so instead of watching nothing."""
    result, _ = run(_json({"code": 200, "msg": "success", "data": None}), call="submit")
    assert isinstance(result, ProviderRefused)
    assert "taskId" in str(result)


def test_rate_limiter_spaces_requests_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 2 requests per second, requests made at once go out 0, 0.5, 1.0 and 1.5 s later."""
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(client_module.asyncio, "sleep", fake_sleep)
    limiter = RateLimiter(2.0, clock=lambda: 100.0)

    async def go() -> None:
        for _ in range(4):
            await limiter.wait()

    asyncio.run(go())
    assert slept == [0.5, 1.0, 1.5]


def test_rate_limited_answer_pauses_every_request() -> None:
    """After code 430 the limiter holds the next request back, whatever task it is for."""
    limiter = RateLimiter(1000.0)
    before = limiter._next
    limiter.pause(3.0)
    assert limiter._next >= time.monotonic() + 2.9 > before


@pytest.mark.parametrize(
    ("name", "path", "kind"),
    [
        ("upload-extend", "/api/v1/generate/upload-extend", "music"),
        ("generate", "/api/v1/generate", "music"),
        ("lyrics", "/api/v1/lyrics", "lyrics"),
        ("wav", "/api/v1/wav/generate", "wav"),
        ("stems", "/api/v1/vocal-removal/generate", "stems"),
        ("video", "/api/v1/mp4/generate", "video"),
        ("/api/v1/suno/cover/generate", "/api/v1/suno/cover/generate", "cover"),
        ("MIDI", "/api/v1/midi/generate", "midi"),
    ],
    ids=["seed", "generate", "lyrics", "wav", "stems-alias", "video-alias", "full-path", "upper-case"],
)
def test_operations_name_their_path_and_kind(name: str, path: str, kind: str) -> None:
    """Every submit path of PROVIDER_API.md is reachable by its name, an alias or the path itself."""
    op = operations.find(name)
    assert (op.path, op.kind) == (path, kind)
    assert operations.poll_path(kind).endswith("/record-info")


def test_unknown_operation_and_unpollable_kind_name_the_choices() -> None:
    """A typo lists the operations; a kind without a details endpoint lists those that have one."""
    with pytest.raises(ValueError, match="upload-extend"):
        operations.find("upload-extnd")
    with pytest.raises(ValueError, match="music"):
        operations.poll_path("voice")


NOW = 1_760_000_000.0
HKEY = "hmac-key-123"
BODY = {"code": 200, "msg": "ok", "data": {"task_id": "sig1", "callbackType": "complete"}}


@pytest.mark.parametrize(
    ("body", "timestamp", "sig", "problem"),
    [
        (BODY, str(int(NOW)), signature.sign(HKEY, "sig1", str(int(NOW))), None),
        (BODY, str(int(NOW) - 299), signature.sign(HKEY, "sig1", str(int(NOW) - 299)), None),
        ({"taskId": "top"}, str(int(NOW)), signature.sign(HKEY, "top", str(int(NOW))), None),
        (BODY, str(int(NOW)), signature.sign("other-key", "sig1", str(int(NOW))), "wrong"),
        (BODY, str(int(NOW)), signature.sign(HKEY, "another-task", str(int(NOW))), "wrong"),
        (BODY, str(int(NOW) - 301), signature.sign(HKEY, "sig1", str(int(NOW) - 301)), "stale"),
        (BODY, str(int(NOW) + 400), signature.sign(HKEY, "sig1", str(int(NOW) + 400)), "stale"),
        (BODY, None, "x", "missing"),
        (BODY, str(int(NOW)), None, "missing"),
        (BODY, "yesterday", "x", "Unix time"),
        ({"code": 200, "data": {}}, str(int(NOW)), "x", "no taskId"),
        (BODY, str(int(NOW)), "not base64 at all ✓", "wrong"),
    ],
    ids=[
        "good",
        "good-at-the-edge",
        "good-top-level-task-id",
        "wrong-key",
        "other-task",
        "stale",
        "from-the-future",
        "no-timestamp",
        "no-signature",
        "timestamp-not-a-number",
        "no-task-id",
        "garbage-signature",
    ],
)
def test_hmac_signatures(body: Any, timestamp: str | None, sig: str | None, problem: str | None) -> None:
    """kie.ai's scheme: valid and fresh passes; wrong, stale or missing says why."""
    found = signature.problem(HKEY, body, timestamp, sig, NOW)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_client_against_the_loopback_fake(provider: Any) -> None:
    """Over real HTTP: a submit creates a task, its polls follow the script, an unknown task has no data."""

    async def go() -> tuple[str, list[str], Any]:
        async with ProviderClient(provider.url, provider.key, rate_limit=100) as client:
            task_id, _ = await client.submit(operations.find("wav"), {"callBackUrl": "https://x.test/callback/t"})
            flags = [(await client.record_info("wav", task_id))["data"]["successFlag"] for _ in range(3)]
            unknown = await client.record_info("wav", "nobody-knows")
            return task_id, flags, unknown

    task_id, flags, unknown = asyncio.run(go())
    assert task_id.startswith("fake-wav-")
    assert flags == ["PENDING", "SUCCESS", "SUCCESS"]
    assert unknown["data"] is None
    assert provider.submits()[0].body["callBackUrl"] == "https://x.test/callback/t"
    assert all(r.headers["authorization"] == f"Bearer {provider.key}" for r in provider.requests)
