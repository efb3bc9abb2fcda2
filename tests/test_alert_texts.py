"""Alert texts a person acts on (pure): notify types, titles that say what and why, digests, links, masking."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from relay import apprise_log
from relay.digest import digest
from relay.messages import TITLE_WIDTH, Message, build, category, task_link, url_changed, warning
from relay.payloads import advance, extract
from relay.redact import mask_url, scrub_url_secrets, url_secrets
from tests.family import FAMILY, TRACK, music


def delivery(payload: Any, task_state: str | None = None, **extra: Any) -> dict[str, Any]:
    """A recorded delivery as the store publishes it."""
    return {**extract(payload).as_fields(), "task_state": task_state, "fingerprint": "f", "id": 1, **extra}


def failure(code: int, task: str = "t1", msg: str = "nope", tracks: list[Any] | None = None) -> dict[str, Any]:
    """A failure callback of the music kind."""
    body = {"code": code, "msg": msg, "data": {"callbackType": "error", "task_id": task, "data": tracks}}
    return delivery(body)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (delivery(music()), "success"),
        (delivery(FAMILY["music-error-null-data"][0]), "failure"),
        (delivery(FAMILY["lyrics"][0]), "success"),
        (delivery(FAMILY["cover-failed"][0]), "failure"),
    ],
    ids=["success", "failure", "lyrics", "kind-specific-failure"],
)
def test_each_outcome_has_its_notify_type(doc: dict[str, Any], expected: str) -> None:
    """Successes are Apprise SUCCESS and failures FAILURE, so phones show them differently."""
    assert build(doc).type == expected


def test_warnings_are_warnings() -> None:
    """Problems with relay itself (URL changed, …) are WARNING and route like failures."""
    message = url_changed("https://old.example.test", "https://new.example.test")
    assert (message.type, message.category) == ("warning", "warning")
    assert message.title.startswith("⚠️")
    assert warning("relay: archive stopped", "disk full").type == "warning"


@pytest.mark.parametrize(
    ("doc", "parts"),
    [
        (failure(451, "e1"), ["Music", "e1", "451", "source audio unreachable"]),
        (failure(429, "e2"), ["Music", "e2", "429", "out of credits"]),
        (failure(413, "e3", tracks=[{**TRACK, "title": "Iron Man"}]), ["Music", "Iron Man", "413", "prompt too long"]),
        (failure(599, "e4", msg="Something odd"), ["Music", "e4", "599", "Something odd"]),
        (delivery(FAMILY["cover-failed"][0]), ["Cover image", "cv2", "501", "generation failed"]),
        (delivery(FAMILY["data-error-string"][0]), ["Task", "es1", "content policy violation"]),
        (
            failure(451, "e5", tracks=[{**TRACK, "title": "A title long enough to push the reason off the line"}]),
            ["Music", "A title", "451 source audio unreachable"],
        ),
    ],
    ids=["451", "429", "with-title", "unknown-code", "cover-kind", "no-code", "long-title"],
)
def test_failure_titles_say_what_and_why(doc: dict[str, Any], parts: list[str]) -> None:
    """A failure's title names the kind, the title or task id and what the code means, within ~60 characters."""
    title = build(doc).title
    assert len(title) <= TITLE_WIDTH, title
    assert title.startswith("❌")
    for part in parts:
        assert part in title, (part, title)


def test_four_failures_give_four_different_lines() -> None:
    """Four failures on the lock screen are four distinguishable lines, not four `❌ Music failed`."""
    titles = {build(failure(code, f"task{code}")).title for code in (400, 429, 451, 501)}
    assert len(titles) == 4


def test_untitled_successes_are_distinguishable() -> None:
    """Successes of kinds without titles name their task, so a WAV alert differs from the next one."""
    wav = FAMILY["wav"][0]
    first = build(delivery(wav)).title
    other = build(delivery({**wav, "data": {**wav["data"], "task_id": "w2"}})).title
    assert first != other


def test_digest_lists_distinguishable_entries_grouped_with_counts() -> None:
    """A burst of 30 folds into one digest whose title counts and whose lines differ (task id, titles, durations)."""
    successes = [
        build(delivery(music(task=f"b{n}", tracks=[TRACK, {**TRACK, "title": "Iron Man (take 2)"}])), "http://nas.test")
        for n in range(27)
    ]
    failures = [build(failure(451, f"f{n}"), "http://nas.test") for n in range(3)]
    folded = digest([*successes[:10], *failures, *successes[10:]])
    assert folded.title == "relay: 30 updates: 3 failed, 27 ready"
    assert folded.type == "failure"
    lines = [line for line in folded.text.splitlines() if line.startswith("- ")]
    assert len(lines) == len(set(lines)) == 30
    assert lines[0].startswith("- ❌")  # failures first
    assert "Iron Man 3:18 · Iron Man (take 2) 3:18 · task b0" in folded.text
    assert "http://nas.test/tasks/b0" in folded.text
    assert "[open](http://nas.test/tasks/f0)" in folded.markdown
    assert digest(successes[:2]).type == "success"


def test_digest_of_rows_queued_by_an_older_relay_still_reads() -> None:
    """Alerts queued before entries existed fold by their titles."""
    old = [Message("success", "✅ Music ready: A", "", ""), Message("failure", "❌ Music failed", "", "")]
    assert "- ✅ Music ready: A" in digest(old).text


@pytest.mark.parametrize(
    ("base", "task", "expected"),
    [
        ("http://nas.lan:8081", "2fac", "http://nas.lan:8081/tasks/2fac"),
        ("https://vpn.example.test/relay/", "a/b c", "https://vpn.example.test/relay/tasks/a%2Fb%20c"),
        ("", "2fac", None),
        ("http://nas.lan:8081", None, None),
    ],
    ids=["plain", "quoted-and-trailing-slash", "no-base", "no-task"],
)
def test_task_links(base: str, task: str | None, expected: str | None) -> None:
    """notify.link_base links alerts to `<link_base>/tasks/<task id>`, the id URL-quoted."""
    assert task_link(base, task) == expected


def test_alert_bodies_link_to_the_task_page() -> None:
    """With notify.link_base, success and failure bodies carry the link; without, they do not."""
    for doc in (delivery(music(task="x1")), failure(451, "x1")):
        message = build(doc, "http://nas.lan:8081")
        assert "http://nas.lan:8081/tasks/x1" in message.text
        assert "(http://nas.lan:8081/tasks/x1)" in message.markdown
        assert "/tasks/" not in build(doc).text


def test_cover_image_is_chosen() -> None:
    """The picture to attach is the first track's cover, or a cover task's first image; failures have none."""
    assert build(delivery(music())).image == TRACK["image_url"]
    assert build(delivery(FAMILY["cover"][0])).image == "https://e/1.png"
    assert build(failure(451)).image is None


def test_a_complete_after_an_error_alerts() -> None:
    """A `complete` after an `error` for the same task moves it to complete and alerts its tracks."""
    events = ("complete", "error")
    state = advance(None, "error", False)
    assert category(failure(451, "t9") | {"task_state": state}, events) == "failure"
    state = advance(state, "complete", True)
    assert state == "complete"
    assert category(delivery(music(task="t9"), task_state=state), events) == "success"
    late_error = advance(state, "error", False)
    assert category(failure(451, "t9") | {"task_state": late_error}, events) is None


@pytest.mark.parametrize(
    ("url", "shown", "hidden"),
    [
        ("ntfy://ntfy.sh/my-topic", "ntfy://ntfy.sh/m...c", ["my-topic"]),
        ("ntfy://my-secret-topic", "ntfy://m...c", ["my-secret-topic"]),
        ("json://127.0.0.1:8080/hook-path", "json://127.0.0.1:8080/h...h", ["hook-path"]),
        (
            "mailto://alice:hunter22@mail.example.test:587?to=bob@example.test",
            "mailto://***:****@mail.example.test:587?to=b...t",
            ["alice", "hunter22", "bob@example.test"],
        ),
        ("tgram://123456789:AAbbCCddEE/424242", "tgram://1...E/4...2", ["AAbbCCddEE", "424242"]),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV", "discord://4...8/J...V", ["JHMHI8qBe7bk2ZwO5U711o3dV"]),
        ("ntfy:/ntfy.sh/my-topic", "ntfy:/n...h/m...c", ["my-topic"]),
        ("json://[::1]:9/abcdef", "json://[::1]:9/a...f", ["abcdef"]),
    ],
    ids=["ntfy-topic", "ntfy-bare-topic", "json-path", "mailto", "telegram-token", "discord", "typo", "ipv6"],
)
def test_target_urls_are_masked(url: str, shown: str, hidden: list[str]) -> None:
    """Scheme and host stay readable; users, passwords, path segments, query values and token hosts are cut."""
    assert mask_url(url) == shown
    for secret in hidden:
        assert secret not in mask_url(url)
    assert mask_url(mask_url(url)) == mask_url(url)  # masking what is shown changes nothing


def test_text_quoting_a_target_is_scrubbed() -> None:
    """Apprise's own log lines (ntfy quotes its URL) lose the secrets the mask hides."""
    line = "A Connection error occurred sending ntfy:https://ntfy.sh/my-topic notification."
    assert "my-topic" not in scrub_url_secrets(line, url_secrets("ntfy://ntfy.sh/my-topic"))


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [
                (logging.WARNING, "A Connection error occurred sending JSON notification to 127.0.0.1."),
                (logging.DEBUG, "Socket Exception: HTTPConnectionPool(...): [Errno 111] Connection refused'))"),
            ],
            "A Connection error occurred sending JSON notification to 127.0.0.1 (Connection refused)",
        ),
        (
            [
                (logging.WARNING, 'Connection error while submitting email to "127.0.0.1"'),
                (logging.DEBUG, "Socket Exception: (535, b'5.7.8 Authentication credentials invalid')"),
            ],
            'Connection error while submitting email to "127.0.0.1" (535 5.7.8 Authentication credentials invalid)',
        ),
        (
            [(logging.DEBUG, "Socket Exception: HTTPConnectionPool(host='x'): Read timed out. (read timeout=1.0)")],
            "failed (read timed out)",
        ),
        ([(logging.WARNING, "Failed to send JSON POST notification: Internal server error., error=500.")],
         "Failed to send JSON POST notification: Internal server error., error=500"),
        ([], None),
    ],
    ids=["refused", "smtp-535", "read-timeout", "http-500", "nothing-logged"],
)
def test_apprise_reasons_are_condensed(lines: list[tuple[int, str]], expected: str | None) -> None:
    """What Apprise logged during a send becomes one line saying why."""
    assert apprise_log.reason(lines) == expected


def test_short_meanings_leave_room_for_a_task_id() -> None:
    """Each short meaning fits 24 characters, so a 12-character task id and the code still fit the title."""
    from relay.codes import SHORT_MEANINGS

    assert all(len(text) <= 24 for text in SHORT_MEANINGS.values())
    for code in SHORT_MEANINGS:
        assert "7b31c0de55aa" in build(failure(code, "7b31c0de55aa")).title, code
