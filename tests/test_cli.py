"""The CLI in-process (click's runner) over log files written here: output formats, widths, colour, small commands."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from relay.alerts import load_targets
from relay.cli import cli
from relay.config import NotifySettings, parse_settings
from relay.errors import ConfigError, StoreError
from relay.formatting import plural
from relay.ingest import delivery_doc, rejected_doc
from relay.journal import ensure_unlocked, lock_path
from relay.log_once import OncePerProcess
from relay.output import Column, colour_enabled, fit_widths, table
from relay.render import DELIVERY_COLUMNS, size_text
from relay.tunnel import make_tunnel
from tests.conftest import write_config
from tests.family import FAMILY, TRACK, music

TOKEN = "cli-token-0123456789abcdef"


def tinydb(path: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    """A TinyDB file holding `tables`, ids from 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: {str(i): doc for i, doc in enumerate(docs, 1)} for name, docs in tables.items()}))


def recorded(payload: Any, n: int, state: str | None = None) -> dict[str, Any]:
    """A delivery as the store records it."""
    doc = delivery_doc(payload, f"2026-11-25T04:{n // 60:02d}:{n % 60:02d}.000Z", 100, "relay.example.test")
    return {**doc, "id": n, "duplicate": False, "task_state": state or doc["stage"]}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with relay.toml (provider none, a public URL) and a log of three deliveries, one alerted."""
    monkeypatch.delenv("RELAY_TOKEN", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    state = tmp_path / "state"
    write_config(
        tmp_path,
        {
            "server": {"port": 18080, "token": TOKEN},
            "storage": {"state_dir": str(state)},
            "tunnel": {"provider": "none", "public_url": "https://relay.example.test"},
        },
    )
    long_title = {**TRACK, "title": "A title long enough to need cutting in a narrow terminal, really"}
    docs = [
        recorded(music(task="t-one"), 1),
        recorded(music(task="t-two", tracks=[TRACK, long_title]), 2),
        recorded(FAMILY["music-error-null-data"][0], 3, "failed"),
    ]
    rejected = [
        rejected_doc(b"", "body of 2000000 bytes exceeds max_body_bytes", 413, "2026-11-25T04:00:09Z", None, True,
                     0, 2_000_000),
        rejected_doc(b"nope", "not JSON", 400, "2026-11-25T04:00:10Z", None),
    ]  # fmt: skip
    tinydb(state / "callbacks.json", {"callbacks": docs, "rejected": rejected})
    alert = {
        "key": "t-one:music:complete",
        "task_id": "t-one",
        "delivery_id": 1,
        "title": "✅ Music ready: Iron Man",
        "state": "sent",
        "targets": [
            {"key": "k", "target": "ntfy://ntfy.sh/my-topic", "state": "sent", "attempts": 2, "error": None},
        ],
    }
    tinydb(state / "outbox.json", {"alerts": [alert]})
    return tmp_path


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """`relay ARGS --config home/relay.toml`, in-process."""
    return CliRunner().invoke(cli, [*args, "--config", str(home / "relay.toml")], env=env, catch_exceptions=False)


@pytest.mark.parametrize("fmt", ["table", "json", "nl", "csv"])
def test_relay_log_prints_each_format(home: Path, fmt: str) -> None:
    """One shared option: a table by default, --json full documents, --nl and --csv the table's columns uncut."""
    out = run(home, "log", f"--{fmt}").output
    lines = out.splitlines()
    if fmt == "table":
        assert lines[0].split() == ["RECEIVED", "(UTC)", "TASK", "KIND", "STAGE", "RESULT", "ALERT", "TITLES"]
        assert len(lines) == 4
        assert lines[1].split()[:7] == ["2026-11-25", "04:00:01", "t-one", "music", "complete", "ok", "sent"]
    elif fmt == "json":
        docs = [json.loads(line) for line in lines]
        assert [d["task_id"] for d in docs] == ["t-one", "t-two", "e1"]
        assert docs[0]["alert"] == {
            "state": "sent",
            "title": "✅ Music ready: Iron Man",
            "targets": [{"target": "ntfy://ntfy.sh/m...c", "state": "sent", "attempts": 2, "error": None}],
        }
        assert docs[1]["alert"] is None
        assert docs[0]["payload"] == music(task="t-one")
    elif fmt == "nl":
        rows = [json.loads(line) for line in lines]
        assert list(rows[0]) == [c.key for c in DELIVERY_COLUMNS]
        assert rows[1]["titles"].endswith("really")
        assert rows[2]["result"] == "FAILED 451"
    else:
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["task_id"] for r in rows] == ["t-one", "t-two", "e1"]
        assert rows[0]["alert"] == "sent"
        assert rows[0]["received_at"] == "2026-11-25T04:00:01.000Z"  # whole, unlike the table


@pytest.mark.parametrize("fmt", ["table", "json", "nl", "csv"])
def test_relay_log_rejected_prints_each_format(home: Path, fmt: str) -> None:
    """`relay log --rejected` takes the same option; a 413 refused by its header shows the size it declared."""
    out = run(home, "log", "--rejected", f"--{fmt}").output
    if fmt == "table":
        assert "2000000 declared" in out.splitlines()[1]
    elif fmt == "csv":
        assert next(csv.DictReader(io.StringIO(out)))["size"] == "2000000 declared"
    else:
        first = json.loads(out.splitlines()[0])
        assert first["size"] == (2_000_000 if fmt == "json" else "2000000 declared")


@pytest.mark.parametrize("fmt", ["table", "json", "nl", "csv"])
def test_relay_show_prints_each_format(home: Path, fmt: str) -> None:
    """`relay show`: its own view by default, one JSON document, or one row per track with --nl/--csv."""
    out = run(home, "show", "t-two", f"--{fmt}").output
    if fmt == "table":
        assert out.startswith("task t-two: complete")
    elif fmt == "json":
        assert json.loads(out)["task_id"] == "t-two"
    elif fmt == "nl":
        rows = [json.loads(line) for line in out.splitlines()]
        assert next(r["title"] for r in rows) == "Iron Man"
        assert rows[0]["url"] == TRACK["audio_url"]
    else:
        assert len(list(csv.DictReader(io.StringIO(out)))) == 2


def test_show_masks_targets_and_counts_attempts(home: Path) -> None:
    """`relay show` masks a target stored unmasked by an earlier relay and says '2 attempts'."""
    out = run(home, "show", "t-one").output
    assert "ntfy://ntfy.sh/m...c: sent after 2 attempts" in out
    assert "my-topic" not in out


@pytest.mark.parametrize("columns", [40, 50, 72])
def test_tables_fit_the_terminal(home: Path, columns: int) -> None:
    """Every line of the table fits $COLUMNS; the flexible columns are cut with …"""
    out = run(home, "log", env={"COLUMNS": str(columns)}).output
    assert all(len(line) <= columns for line in out.splitlines()), out
    assert "…" in out


def test_tables_are_whole_when_piped(home: Path) -> None:
    """Without a terminal (and no $COLUMNS) nothing is cut."""
    assert "…" not in run(home, "log").output


@pytest.mark.parametrize(
    ("natural", "flexible", "width", "expected"),
    [
        ([10, 40, 20], [False, True, True], 60, [10, 26, 20]),
        ([10, 40, 30], [False, True, True], 50, [10, 18, 18]),
        ([10, 40], [False, False], 20, [10, 40]),
        ([10, 40], [False, True], None, [10, 40]),
    ],
    ids=["widest-gives-way", "both-shrink", "nothing-flexible", "no-limit"],
)
def test_fitting_column_widths(
    natural: list[int], flexible: list[bool], width: int | None, expected: list[int]
) -> None:
    """The widest flexible column gives way first, gaps included."""
    assert fit_widths(natural, flexible, width) == expected


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "expected"),
    [
        (FakeTerminal(), {}, True),
        (FakeTerminal(), {"NO_COLOR": "1"}, False),
        (FakeTerminal(), {"TERM": "dumb"}, False),
        (FakeTerminal(), {"NO_COLOR": ""}, True),
        (io.StringIO(), {}, False),
    ],
    ids=["terminal", "no-color", "dumb-terminal", "empty-no-color", "piped"],
)
def test_colour_only_on_a_terminal(
    stream: io.StringIO, env: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Colour on a terminal unless NO_COLOR is set (to anything but empty) or TERM is dumb."""
    for key in ("NO_COLOR", "TERM"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert colour_enabled(stream) is expected


def test_coloured_tables_keep_their_alignment() -> None:
    """Colour codes go around padded cells, so columns line up with or without them."""
    columns = [Column("r", "RESULT", colour=lambda t: "red" if t.startswith("F") else None), Column("t", "T")]
    rows = [{"r": "FAILED 451", "t": "x"}, {"r": "ok", "t": "y"}]
    plain, coloured = table(columns, rows), table(columns, rows, colour=True)
    assert "\x1b[31m" in coloured
    assert "\x1b[" not in plain
    assert [len(line) for line in plain.splitlines()] == [
        len(line.replace("\x1b[31m", "").replace("\x1b[0m", "")) for line in coloured.splitlines()
    ]


def test_piped_output_has_no_colour(home: Path) -> None:
    """The runner is not a terminal: no escape codes."""
    assert "\x1b[" not in run(home, "log").output


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (rejected_doc(b"", "too big", 413, "t", None, True, 0, 2_000_000), "2000000 declared"),
        (rejected_doc(b"x" * 2048, "too big", 413, "t", None, True, 3000, None), "3000 received"),
        (rejected_doc(b"", "slow", 408, "t", None, True, 9, 1000), "1000 declared"),
        (rejected_doc(b"", "slow", 408, "t", None, True, 512, None), "512 received"),
        (rejected_doc(b"nope", "bad", 400, "t", None), "4"),
        ({"size": 0, "status": 413, "truncated": True}, "0"),
    ],
    ids=["413-declared", "413-chunked", "408-declared", "408-chunked", "400", "old-row"],
)
def test_rejected_sizes(doc: dict[str, Any], expected: str) -> None:
    """Rejected rows show the size declared or received, not the 0 bytes kept."""
    assert size_text(doc) == expected


def test_url_local_prints_the_local_callback_url(home: Path) -> None:
    """`relay url --local` needs no running relay: host, port and token from the config."""
    assert run(home, "url", "--local").output.strip() == f"http://127.0.0.1:18080/callback/{TOKEN}"


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("localhost", "localhost")],
    ids=["any-v4", "any-v6", "v6", "name"],
)
def test_url_local_takes_the_token_from_the_state_dir(tmp_path: Path, host: str, expected: str) -> None:
    """Without server.token, the token `relay serve` keeps in the state directory; a listen-anywhere host is local."""
    state = tmp_path / "state"
    state.mkdir()
    write_config(tmp_path, {"server": {"host": host, "port": 9999}, "storage": {"state_dir": str(state)}})
    missing = run(tmp_path, "url", "--local")
    assert missing.exit_code == 1
    assert "no callback token yet" in missing.output
    (state / "token").write_text("kept-token-0123456789abcdef\n")
    assert run(tmp_path, "url", "--local").output.strip() == f"http://{expected}:9999/callback/kept-token-0123456789abcdef"


def _init(tmp_path: Path, *args: str) -> tuple[Result, str]:
    config = tmp_path / "etc" / "relay.toml"
    result = CliRunner().invoke(cli, ["init", str(config), "--state-dir", str(tmp_path / "state"), *args])
    token = json.loads(config.read_text().split("token = ")[1].split()[0]) if config.exists() else ""
    return result, token


def test_init_keeps_the_token_in_use(tmp_path: Path) -> None:
    """`relay init` writes the state directory's token (callBackUrls handed out keep working), also on --force."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "token").write_text("quickstart-token-0123456789\n")
    result, token = _init(tmp_path)
    assert token == "quickstart-token-0123456789"
    assert "kept the token in use" in result.output
    (tmp_path / "state" / "token").unlink()
    result, token = _init(tmp_path, "--force")
    assert token == "quickstart-token-0123456789"  # the file being overwritten held it


def test_init_new_token_writes_a_fresh_one(tmp_path: Path) -> None:
    """--new-token replaces the token in use; without any token in use a fresh one is written quietly."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "token").write_text("quickstart-token-0123456789\n")
    result, token = _init(tmp_path, "--new-token")
    assert token != "quickstart-token-0123456789"
    assert len(token) >= 40
    assert "kept" not in result.output
    (tmp_path / "state" / "token").unlink()
    (tmp_path / "etc" / "relay.toml").unlink()
    result, fresh = _init(tmp_path)
    assert fresh not in ("", token)
    assert "kept" not in result.output


def test_a_closed_pipe_ends_quietly(home: Path) -> None:
    """`relay log --json | head -1`: no 'Broken pipe', the status of a tool ended by SIGPIPE."""
    docs = [recorded(music(task=f"p{n}"), n) for n in range(1, 1500)]
    tinydb(home / "state" / "callbacks.json", {"callbacks": docs})
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "log", "--json", "--config", str(home / "relay.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=home,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert json.loads(proc.stdout.readline())["task_id"] == "p1"
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 141
    assert stderr == ""


@pytest.mark.parametrize(
    ("tunnel", "reason"),
    [
        ({"provider": "none"}, 'tunnel.provider is "none" and tunnel.public_url is empty'),
        ({"provider": "ngrok"}, "no ngrok authtoken"),
        ({"provider": "none", "public_url": "https://relay.example.test"}, None),
    ],
    ids=["none-without-url", "ngrok-without-token", "none-with-url"],
)
def test_check_and_serve_share_one_rule(
    tmp_path: Path, tunnel: dict[str, str], reason: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay check` notes exactly what `relay serve` will say about the public URL (the tunnel's problem)."""
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    write_config(tmp_path, {"tunnel": tunnel, "storage": {"state_dir": str(tmp_path / "state")}})
    out = run(tmp_path, "check").output
    settings = parse_settings({"tunnel": tunnel}, env={})
    problem = make_tunnel(settings, 8080, lambda old, new: None).problem
    if reason is None:
        assert "note" not in out
        assert problem == ""
    else:
        assert reason in problem
        assert f"note: no public callback URL: {problem}" in out


def test_check_counts_in_words(home: Path) -> None:
    """'1 alert target', not '1 alert target(s)'."""
    write_config(home, {"notify": {"urls": ["json://127.0.0.1:9/x"]}, "storage": {"state_dir": str(home)}})
    assert "(1 alert target;" in run(home, "check").output


@pytest.mark.parametrize(
    ("count", "word", "many", "expected"),
    [(1, "live delivery", "live deliveries", "1 live delivery"), (0, "alert", None, "0 alerts"),
     (2, "attempt", None, "2 attempts"), (3, "delivery", None, "3 deliveries"), (2, "key", None, "2 keys")],
    ids=["one", "zero", "two", "y-ies", "vowel-y"],
)  # fmt: skip
def test_plurals(count: int, word: str, many: str | None, expected: str) -> None:
    """Counts read as English."""
    assert plural(count, word, many) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tunnel": {"public_url": "ftp://x"}}, "tunnel.public_url: 'ftp://x' must start with http:// or https://"),
        ({"notify": {"link_base": "nas:8081"}}, "notify.link_base: 'nas:8081' must start with http:// or https://"),
    ],
    ids=["public-url", "link-base"],
)
def test_config_messages_have_no_pydantic_prefix(raw: dict[str, Any], expected: str) -> None:
    """Messages of relay's own validators read as relay wrote them, without pydantic's 'Value error, '."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw, env={})
    assert expected in str(caught.value)
    assert "Value error" not in str(caught.value)


def test_a_typo_url_is_masked_sensibly() -> None:
    """`ntfy:/ntfy.sh/my-topic` (one slash) is named masked like any URL, with a hint, never `'ntfy:/ntfy.s://…'`."""
    _, problems = load_targets(NotifySettings.model_validate({"urls": ["ntfy:/ntfy.sh/my-topic"]}))
    assert problems == [
        "notify.urls[0]: 'ntfy:/n...h/m...c' is not a URL Apprise understands (a URL looks like scheme://host/…)"
    ]


def test_uvicorn_process_lines_pass_once() -> None:
    """Two servers in one process: 'Started server process' and 'Finished server process' are logged once."""
    once = OncePerProcess()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, message, (42,), None)

    passed = [once.filter(record(m)) for m in ("Started server process [%d]", "Started server process [%d]")]
    assert passed == [True, False]
    assert once.filter(record("Waiting for connections"))
    assert once.filter(record("Waiting for connections"))


def test_a_held_lock_is_found_before_anything_binds(tmp_path: Path) -> None:
    """ensure_unlocked names the other writer when the log's lock is held, and is quiet when it is not."""
    log = tmp_path / "callbacks.json"
    ensure_unlocked(log)  # no lock file yet
    fd = os.open(lock_path(log), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError, match="another relay process is writing"):
            ensure_unlocked(log)
    finally:
        os.close(fd)
    ensure_unlocked(log)
