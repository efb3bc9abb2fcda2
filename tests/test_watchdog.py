"""The watchdog in-process, over a real log and watch list: every bad answer is recorded or retried with a clear
log line, never a crash or a stuck watcher; and the CLI's pure helpers."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.cli_provider import request_body, typed, with_kind
from relay.config import ProviderSettings
from relay.errors import RelayError
from relay.messages import Message
from relay.provider.client import ProviderClient
from relay.provider.watchdog import Watchdog
from relay.provider.watchlist import WatchList, read_rows
from relay.store import DeliveryStore, read_all
from tests import provider_answers as pa

T = "t-bad-1"
HTML = "<!DOCTYPE html><html><body>Bad Gateway</body></html>"

# name -> (kind, HTTP status, body (JSON value, or text), expected state, deliveries recorded, log line)
BAD: dict[str, tuple[str, int, Any, str, int, str]] = {
    "not-json": ("music", 200, "Service Unavailable", "polling", 0, "not a JSON envelope"),
    "html-error-page": ("music", 502, HTML, "polling", 0, "HTTP 502 with an HTML page"),
    "http-200-code-500": ("music", 200, {"code": 500, "msg": "Server Error"}, "polling", 0, "code 500"),
    "data-missing": ("music", 200, {"code": 200, "msg": "success"}, "polling", 0, "does not know task"),
    "data-null": ("wav", 200, pa.envelope(None), "polling", 0, "does not know task"),
    "unknown-task-code": ("music", 200, {"code": 422, "msg": "recordInfo is null"}, "polling", 0, "code 422"),
    "success-flag-int": ("cover", 200, pa.flagged(T, 1, pa.COVER), "done", 1, "recorded as delivery"),
    "success-flag-string": ("video", 200, pa.flagged(T, "SUCCESS", pa.VIDEO), "done", 1, "recorded as delivery"),
    "midi-flag-int": ("midi", 200, pa.midi(T, 1), "done", 1, "recorded as delivery"),
    "param-string-epoch-ms": ("music", 200, pa.music(T), "done", 1, "SUCCESS -> done"),
    "callback-exception": ("music", 200, pa.music(T, "CALLBACK_EXCEPTION"), "done", 1, "CALLBACK_EXCEPTION"),
    "unknown-status": ("music", 200, pa.music(T, "MYSTERY", tracks=[]), "polling", 0, "MYSTERY -> running"),
    "failed-with-code": ("wav", 200, pa.failure("wav", T), "failed", 1, "GENERATE_WAV_FAILED -> failed"),
}


async def one_poll(tmp_path: Path, kind: str, status: int, body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Watch T, let the watchdog poll it once against an answer of `status` and `body`; the row and the log."""

    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            kind_of = "text/html" if body.startswith("<!") else "text/plain"
            return httpx.Response(status, text=body, headers={"content-type": kind_of})
        return httpx.Response(status, json=body)

    alerts: list[tuple[Message, str]] = []

    async def alert(message: Message, key: str, task_id: str | None) -> None:
        alerts.append((message, key))

    settings = ProviderSettings(poll_after=0, poll_interval=3600)
    store = DeliveryStore(tmp_path / "callbacks.json")
    await store.open()
    client = ProviderClient("http://127.0.0.1:9", "k", rate_limit=1000, transport=httpx.MockTransport(answer))
    watchlist = WatchList(tmp_path / "watch.json")
    async with watchlist, Watchdog(settings, watchlist, store, alert, client) as watchdog:
        await watchdog.watch(T, kind)
        deadline = time.monotonic() + 30
        while not (watchlist.get(T) or {}).get("polls"):
            assert time.monotonic() < deadline, "never polled"
            await asyncio.sleep(0.01)
        row = dict(watchlist.get(T) or {})
    await store.close()
    return row, read_all(tmp_path / "callbacks.json")


@pytest.mark.parametrize(("kind", "status", "body", "state", "recorded", "line"), list(BAD.values()), ids=list(BAD))
def test_bad_answers_are_recorded_or_retried_with_a_log_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    status: int,
    body: Any,
    state: str,
    recorded: int,
    line: str,
) -> None:
    """One poll of each odd answer leaves the task in a state that moves on, and says what happened."""
    caplog.set_level(logging.DEBUG, logger="relay")
    row, docs = asyncio.run(one_poll(tmp_path, kind, status, body))
    assert row["state"] == state
    assert len(docs) == recorded
    assert all(d["source"] == "poll" and d["kind"] == kind for d in docs)
    if state == "polling":
        assert row["next_poll"] > time.time()  # asked again later, not stuck and not hammering
    assert line in caplog.text
    assert [r["task_id"] for r in read_rows(tmp_path / "watch.json")] == [T]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-3", -3),
        ("0.5", 0.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("V4_5", "V4_5"),
        ("007", "007"),
        ("1e5", "1e5"),
        ("", ""),
        ('["a", 1]', ["a", 1]),
        ('{"k": true}', {"k": True}),
        ("[not json", "[not json"),
        ("https://e.test/a.mp3?x=1", "https://e.test/a.mp3?x=1"),
    ],
    ids=[
        "int",
        "negative",
        "float",
        "true",
        "false",
        "null",
        "model-name",
        "leading-zero-stays-text",
        "exponent-stays-text",
        "empty",
        "list",
        "object",
        "broken-json",
        "url",
    ],
)
def test_param_values_are_typed_sensibly(text: str, value: Any) -> None:
    """--param values become numbers, booleans and null like JSON; everything else stays a string."""
    assert typed(text) == value


def test_request_body_merges_file_and_params(tmp_path: Path) -> None:
    """--json gives the body, each --param sets a key on top of it; a malformed one is a clear error."""
    path = tmp_path / "body.json"
    path.write_text('{"model": "V4", "prompt": "rain"}')
    assert request_body(path, ("model=V5", "continueAt=30")) == {"model": "V5", "prompt": "rain", "continueAt": 30}
    with pytest.raises(RelayError, match="KEY=VALUE"):
        request_body(None, ("no-equals-sign",))
    path.write_text("[1]")
    with pytest.raises(RelayError, match="JSON object"):
        request_body(path, ())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://r.test/callback/tok", "https://r.test/callback/tok?kind=wav"),
        ("https://r.test/callback/tok?x=1", "https://r.test/callback/tok?x=1&kind=wav"),
    ],
    ids=["plain", "with-query"],
)
def test_callback_url_carries_the_kind(url: str, expected: str) -> None:
    """The kind rides in the callBackUrl's query, whatever query it had."""
    assert with_kind(url, "wav") == expected


def test_watch_state_changes_reach_the_page_as_events(tmp_path: Path) -> None:
    """Watching a task and each change of its watch state is a `watch` event for open pages (issue #14 item 2)."""
    from relay.provider.watchlist import WatchList
    from relay.web.events import Event, EventBroker

    async def main() -> list[tuple[str, Any]]:
        broker = EventBroker()
        seen: list[Event] = []
        broker.publish = seen.append  # type: ignore[method-assign]
        watchlist = WatchList(tmp_path / "watch.json")
        watchlist.listeners.append(broker.watch)
        async with watchlist:
            await watchlist.add("t1", "music", first_poll=0.0, source="watch")
            await watchlist.update("t1", polls=1)  # no change of state: no event
            await watchlist.update("t1", state="polling")
            await watchlist.update("t1", state="done")
        return [(e.name, dict(e.data)) for e in seen]

    assert asyncio.run(main()) == [
        ("watch", {"task_id": "t1", "state": "waiting"}),
        ("watch", {"task_id": "t1", "state": "polling"}),
        ("watch", {"task_id": "t1", "state": "done"}),
    ]
