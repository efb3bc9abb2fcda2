"""Strings a callback can hold that break outputs: terminal escapes (C0, C1, DEL) and lone surrogates.

The log keeps them as they came; every view and every output shows them escaped (see relay/escaping.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from relay.cli import cli
from relay.escaping import EscapingFormatter, for_terminal, json_text
from relay.web.links import task_href
from tests.conftest import RelayProcess, build_relay, end_relay, wait_for
from tests.family import music

#: name: (hostile text, how a terminal shows it)
TERMINAL = {
    "clear-screen": ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    "window-title": ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    "alternate-screen": ("\x1b[?1049h", "\\x1b[?1049h"),
    "c1-csi": ("\x9b31mred", "\\x9b31mred"),
    "c1-range": ("\x80\x85\x9f", "\\x80\\x85\\x9f"),
    "carriage-return": ("ok\rFAKE", "ok\\rFAKE"),
    "newline-forges-a-row": ("a\n2026-01-01  fake", "a\\n2026-01-01  fake"),
    "tab": ("a\tb", "a\\tb"),
    "del": ("x\x7fy", "x\\x7fy"),
    "nul": ("\x00", "\\x00"),
    "lone-high-surrogate": ("\ud800", "\\ud800"),
    "lone-low-surrogate": ("a\udfffb", "a\\udfffb"),
    "plain-unicode": ("Café ♪ 日本 🎵", "Café ♪ 日本 🎵"),
    "printable-ascii": ("Iron Man (3:18) ~!@#$%^&*", "Iron Man (3:18) ~!@#$%^&*"),
}

#: What no terminal output may hold raw.
RAW_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@pytest.mark.parametrize(("text", "shown"), list(TERMINAL.values()), ids=list(TERMINAL))
def test_terminal_shows_controls_and_surrogates_escaped(text: str, shown: str) -> None:
    """C0, DEL, C1 (U+009B included) and lone surrogates become visible escapes; other text is unchanged."""
    assert for_terminal(text) == shown
    assert not RAW_CONTROLS.search(for_terminal(text).replace("\n", ""))
    for_terminal(text).encode("utf-8")


@pytest.mark.parametrize(("text", "shown"), list(TERMINAL.values()), ids=list(TERMINAL))
def test_json_output_escapes_c1_del_and_surrogates_and_keeps_the_value(text: str, shown: str) -> None:
    """`--json` output parses back to the same value, encodes as UTF-8 and holds no raw control character."""
    value = {"msg": text, "nested": [text, {text: 1}]}
    out = json_text(value)
    assert json.loads(out) == value
    assert not RAW_CONTROLS.search(out)
    out.encode("utf-8")


@pytest.mark.parametrize(
    ("task_id", "href"),
    [("2fac4e1c", "/tasks/2fac4e1c"), ("a/b c", "/tasks/a%2Fb%20c"), ("\ud800", "/tasks/%ED%A0%80")],
    ids=["plain", "slash-and-space", "lone-surrogate"],
)
def test_task_links_take_any_task_id(task_id: str, href: str) -> None:
    """A task id becomes one path segment of a link, even one UTF-8 cannot encode (a 500 on the page before)."""
    assert task_href(task_id) == href


def test_log_lines_escape_what_requests_and_callbacks_put_in_them() -> None:
    """relay's own log lines (access log paths, reasons) cannot forge lines or drive the terminal."""
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("relay", logging.INFO, __file__, 1, "GET %s", ("/\x1b[2J\nFAKE \ud800",), None)
    assert formatter.format(record) == "INFO GET /\\x1b[2J\\nFAKE \\ud800"


HOSTILE = "".join(text for text, _ in TERMINAL.values())


def hostile_callback(task: str) -> bytes:
    """A music callback whose message, title, tags and URL hold every hostile string, as JSON escapes."""
    body = music("complete", task=task)
    body["msg"] = HOSTILE
    track = {**body["data"]["data"][0], "title": f"T{HOSTILE}", "tags": HOSTILE}
    body["data"]["data"] = [{**track, "audio_url": f"https://example.cn/{HOSTILE}.mp3"}]  # a copy: TRACK is shared
    return json.dumps(body).encode()  # ensure_ascii: "\ud800" travels as the escape JSON allows


@pytest.fixture(scope="module")
def hostile_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay (shared: the cases only read) holding a hostile callback for task `hostile`, one whose task
    id is hostile, and hostile rejected bodies."""
    relay = build_relay(tmp_path_factory.mktemp("hostile"))
    assert relay.post(hostile_callback("hostile")).status_code == 200
    assert relay.post(hostile_callback(f"id{HOSTILE}")).status_code == 200
    # Rejected bodies are kept as text when they are UTF-8, so their escapes reach `relay log --rejected`.
    assert relay.post("not json \x1b[2J\x9b31m\r\nFAKE row\x7f".encode()).status_code == 400
    assert relay.post(b'{"x": "\x1b]0;title\x07').status_code == 400
    wait_for(lambda: len(relay.deliveries()) == 2)
    yield relay
    end_relay(relay)


@pytest.mark.parametrize(
    "path",
    ["/", "/?task=hostile", "/api/callbacks", "/api/rejected", "/tasks/hostile", "/api/tasks/hostile"],
)
def test_every_view_survives_any_string(hostile_relay: RelayProcess, path: str) -> None:
    """Pages and the JSON API answer 200 (not a UnicodeEncodeError 500) with surrogates and escapes stored."""
    response = httpx.get(hostile_relay.admin + path, timeout=30)
    assert response.status_code == 200, response.text
    if path.startswith("/api/"):
        assert not RAW_CONTROLS.search(response.text)


def test_the_stored_payload_stays_as_it_came(hostile_relay: RelayProcess) -> None:
    """The log keeps the hostile strings themselves, and the JSON API gives them back unchanged."""
    stored = next(d for d in hostile_relay.deliveries() if d["task_id"] == "hostile")
    assert stored["payload"] == json.loads(hostile_callback("hostile"))
    api = httpx.get(hostile_relay.admin + "/api/tasks/hostile", timeout=30).json()
    assert api["deliveries"][0]["payload"] == stored["payload"]


@pytest.mark.parametrize(
    "args",
    [
        ["log"],
        ["log", "--json"],
        ["log", "--rejected"],
        ["log", "--rejected", "--json"],
        ["show", "hostile"],
        ["show", "hostile", "--json"],
        ["show", f"id{HOSTILE}"],
    ],
    ids=["log", "log-json", "rejected", "rejected-json", "show", "show-json", "show-hostile-id"],
)
def test_cli_output_survives_and_escapes(hostile_relay: RelayProcess, args: list[str]) -> None:
    """`relay log` and `relay show`, table and --json, exit 0 and print no raw control character or surrogate."""
    result = CliRunner().invoke(cli, [*args, "--config", str(hostile_relay.config_path)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert not RAW_CONTROLS.search(result.output)
    if "--json" in args:
        docs = [json.loads(line) for line in result.output.splitlines()]
        assert docs
    else:
        assert "\\x1b[2J" in result.output


def test_rows_cannot_be_forged(hostile_relay: RelayProcess) -> None:
    """A newline or CR in a title does not add a row to `relay log`: one line per delivery, plus the header."""
    result = CliRunner().invoke(cli, ["log", "--config", str(hostile_relay.config_path)])
    assert len(result.output.splitlines()) == 1 + 2


def test_forward_results_are_escaped_too() -> None:
    """`relay show`'s forward lines quote what targets answered: escaped like the rest, one line per entry."""
    from relay.cli_forward import forward_lines

    entry = {"target": "t\x1b]0;x\x07", "error": "HTTP 500: \x1b[2J\nok"}
    job = {"delivery_id": 1, "state": "dead", "targets": [entry]}
    out = forward_lines([job])
    assert len(out.splitlines()) == 3
    assert not RAW_CONTROLS.search(out)
    assert "\\x1b[2J\\nok" in out
