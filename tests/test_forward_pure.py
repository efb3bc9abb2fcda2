"""Forwarding's pure parts in-process: filters, signatures (checked by the Standard Webhooks library), the body
sent, config validation, cross-site checks, and `after = "archived"` planning."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from starlette.datastructures import Headers

from relay.config import ForwardTarget, parse_settings
from relay.csrf import CsrfTokens, same_origin
from relay.errors import ConfigError
from relay.forward import signing
from relay.forward.filters import matches, message_id, wanted
from relay.forward.kind import ForwardKind
from relay.ingest import delivery_doc, original_body, parse_body
from relay.jobs import Job
from relay.metrics import Metrics
from relay.store import DeliveryStore
from tests.family import FAMILY, music

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(b"sixteen byte key").decode()


def target(**keys: Any) -> ForwardTarget:
    """A forward target with a URL and the given filters."""
    return ForwardTarget.model_validate({"name": "t", "url": "http://127.0.0.1:9/hook", **keys})


def doc(body: Any, duplicate: bool = False) -> dict[str, Any]:
    """A recorded delivery of `body`."""
    return {**delivery_doc(body, "2026-01-01T00:00:00.000Z", 100, None), "id": 7, "duplicate": duplicate}


MUSIC_OK = doc(music("complete"))
MUSIC_FIRST = doc(music("first"))
MUSIC_FAILED = doc(FAMILY["music-error-null-data"][0])


def _stageless(ok: bool) -> dict[str, Any]:
    return {"id": 1, "kind": "wav", "stage": None, "ok": ok, "fingerprint": "f", "duplicate": False}


@pytest.mark.parametrize(
    ("keys", "delivery", "expected"),
    [
        ({}, MUSIC_OK, True),
        ({"kinds": ["music"]}, MUSIC_OK, True),
        ({"kinds": ["lyrics", "wav"]}, MUSIC_OK, False),
        ({"stages": ["complete"]}, MUSIC_OK, True),
        ({"stages": ["complete"]}, MUSIC_FIRST, False),
        ({"stages": ["error"]}, MUSIC_FAILED, True),
        ({"ok": True}, MUSIC_OK, True),
        ({"ok": True}, MUSIC_FAILED, False),
        ({"ok": False}, MUSIC_FAILED, True),
        ({"ok": False}, MUSIC_OK, False),
        ({"stages": ["complete"]}, _stageless(True), True),
        ({"stages": ["error"]}, _stageless(False), True),
        ({"stages": ["complete"]}, _stageless(False), False),
        ({"kinds": ["music"], "stages": ["complete", "error"], "ok": False}, MUSIC_FAILED, True),
    ],
    ids=[
        "no-filter",
        "kind-listed",
        "kind-not-listed",
        "stage-listed",
        "stage-not-listed",
        "error-stage",
        "ok-true-success",
        "ok-true-failure",
        "ok-false-failure",
        "ok-false-success",
        "stageless-success-is-complete",
        "stageless-failure-is-error",
        "stageless-failure-is-not-complete",
        "all-filters",
    ],
)
def test_filters(keys: dict[str, Any], delivery: dict[str, Any], expected: bool) -> None:
    """kinds, stages and ok each narrow what a target gets; empty or unset lets everything through."""
    assert matches(target(**keys), delivery) is expected


def test_decide_one_job_per_delivery_with_one_entry_per_matching_target(tmp_path: Path) -> None:
    """decide(): a single job for a delivery, naming exactly the targets whose filters match; repeats get none."""
    targets = (
        target(name="all"),
        target(name="music", kinds=["music"]),
        target(name="failures", ok=False),
    )
    kind = ForwardKind(targets, DeliveryStore(tmp_path / "c.json"), parse_settings({}, {}).notify, Metrics())
    [spec] = kind.decide(MUSIC_OK)  # type: ignore[arg-type]
    assert [name for name, _ in spec.targets] == ["all", "music"]
    assert spec.data["webhook_id"] == message_id(MUSIC_OK)
    assert spec.delivery_id == 7
    assert kind.decide({**MUSIC_OK, "duplicate": True}) == []  # type: ignore[typeddict-item]
    assert wanted(targets, {**MUSIC_FAILED, "duplicate": False})[-1].name == "failures"


def test_webhook_ids_are_stable_per_delivery_and_fresh_per_replay() -> None:
    """The same delivery always has the same webhook-id; each replay has its own."""
    assert message_id(MUSIC_OK) == message_id(dict(MUSIC_OK))
    assert message_id(MUSIC_OK) != message_id({**MUSIC_OK, "id": 8})
    assert message_id(MUSIC_OK, "a1") != message_id(MUSIC_OK, "b2") != message_id(MUSIC_OK)


@pytest.mark.parametrize(
    ("secret", "verifier_key"),
    [(SECRET, SECRET), ("plain text secret", b"plain text secret")],
    ids=["whsec-base64", "plain-utf8"],
)
def test_signature_verifies_with_the_reference_library(secret: str, verifier_key: str | bytes) -> None:
    """Signed headers pass standardwebhooks' own verification; a changed body does not."""
    body = b'{"code":200,"msg":"\xc3\xa9t\xc3\xa9"}'
    headers = signing.headers(target(secret=secret).secret_key, "msg_7_abc", body)
    assert Webhook(verifier_key).verify(body, headers) == {"code": 200, "msg": "été"}
    with pytest.raises(Exception, match="signature"):
        Webhook(verifier_key).verify(body.replace(b"200", b"201"), headers)


def test_unsigned_without_a_secret() -> None:
    """Without a secret the id and timestamp are still sent, but no signature."""
    headers = signing.headers(target().secret_key or None, "msg_1", b"{}")
    assert set(headers) == {"webhook-id", "webhook-timestamp"}


@pytest.mark.parametrize(
    ("raw", "content_type", "kept"),
    [
        (b'{"code":200,"msg":"ok","data":{"task_id":"a"}}', None, False),
        (b'{"code": 200, "msg": "ok"}', None, True),
        (b'{\n  "code": 200\n}', "application/json", True),
        (b'{"msg":"caf\\u00e9"}', None, True),
        (b'\xef\xbb\xbf{"code":200}', None, True),
        (b'{"a":1,"a":2}', None, True),
        ('{"msg":"ça va 🎵"}'.encode(), "application/json; charset=utf-8", False),
    ],
    ids=["compact", "spaced", "pretty", "escaped", "bom", "duplicate-keys", "utf8-with-charset"],
)
def test_forwarded_body_is_the_received_bytes(raw: bytes, content_type: str | None, kept: bool) -> None:
    """original_body gives back the exact bytes and content type; raw text is stored only when needed."""
    recorded = delivery_doc(parse_body(raw), "t", len(raw), None, raw, content_type)
    assert ("payload_raw" in recorded) is kept
    recorded = json.loads(json.dumps(recorded))  # as it comes back from the log
    assert original_body(recorded) == (raw, content_type or "application/json")


def test_old_deliveries_without_raw_text_are_sent_as_compact_json() -> None:
    """A delivery logged before relay kept raw text is re-serialized compactly (and a lone surrogate escaped)."""
    assert original_body({"payload": {"a": [1, "é"]}}) == ('{"a":[1,"é"]}'.encode(), "application/json")
    assert original_body({"payload": {"a": "\ud800"}})[0] == b'{"a":"\\ud800"}'


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"name": "x"}, "exactly one of url"),
        ({"name": "x", "url": "http://127.0.0.1/", "exec": ["true"]}, "exactly one of url"),
        ({"name": "x", "url": "ftp://127.0.0.1/hook"}, "http:// or https://"),
        ({"name": "x", "url": "file:///etc/passwd"}, "http:// or https://"),
        ({"name": "x", "url": "http://127.0.0.1/", "secret": "whsec_!!!"}, "base64"),
        ({"name": "x", "exec": ["true"], "secret": "s"}, "exec target has no use"),
        ({"name": "bad name", "url": "http://127.0.0.1/"}, "forward[0].name"),
        ({"name": "x", "url": "http://127.0.0.1/", "stages": ["done"]}, "forward[0].stages[0]"),
        ({"name": "x", "url": "http://127.0.0.1/", "after": "later"}, "forward[0].after"),
        ({"name": "x", "url": "http://127.0.0.1/", "color": "red"}, "forward[0].color: unknown key"),
    ],
    ids=[
        "neither",
        "both",
        "ftp",
        "file",
        "bad-whsec",
        "secret-on-exec",
        "bad-name",
        "bad-stage",
        "bad-after",
        "unknown-key",
    ],
)
def test_bad_forward_config_is_refused_naming_the_key(keys: dict[str, Any], message: str) -> None:
    """Each mistake in a [[forward]] table is refused with a message naming it."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings({"forward": [keys]}, {})


def test_config_errors_never_show_a_forward_url_or_secret() -> None:
    """A refused [[forward]] table names its keys but never prints the URL, secret or command it holds."""
    tables = [
        {"name": "a", "url": "gopher://secret-host/webhook-id-123", "secret": "s3cr3t-value"},
        {"name": "b", "url": "http://127.0.0.1/webhook-id-456", "secret": "whsec_***notb64***"},
        {"name": "c", "exec": ["tool", "--token=hunter2"], "secret": "s3cr3t-value"},
        {"name": "c", "url": "http://127.0.0.1/webhook-id-789"},
    ]
    with pytest.raises(ConfigError) as caught:
        parse_settings({"forward": tables}, {})
    for secret in ("webhook-id", "s3cr3t-value", "notb64", "hunter2", "secret-host"):
        assert secret not in str(caught.value)
    with pytest.raises(ConfigError, match="unique: c") as caught:
        parse_settings({"forward": [tables[3], tables[3]]}, {})
    assert "webhook-id" not in str(caught.value)


def test_every_forward_key_is_in_the_example_and_readme() -> None:
    """config.example.toml's commented [[forward]] block sets every key and parses; the README names each key."""
    text = (ROOT / "config.example.toml").read_text()
    block = text[text.index("# [[forward]]") :]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines() if line.startswith("# "))
    example = tomllib.loads(uncommented)["forward"][0]
    readme = (ROOT / "README.md").read_text()
    for key in ForwardTarget.model_fields:
        assert key in example, f"forward.{key} missing from config.example.toml"
        assert re.search(rf"`forward\.[^`]*\b{key}\b", readme), f"forward.{key} missing from README"
    parse_settings({"forward": [{**example, "exec": []}]}, {})


@pytest.mark.parametrize(
    ("headers", "required", "expected"),
    [
        ({"host": "127.0.0.1:8081", "origin": "http://127.0.0.1:8081"}, True, True),
        ({"host": "127.0.0.1:8081", "referer": "http://127.0.0.1:8081/tasks/a"}, True, True),
        ({"host": "127.0.0.1:8081", "origin": "http://evil.test"}, True, False),
        ({"host": "127.0.0.1:8081", "origin": "http://127.0.0.1:8082"}, True, False),
        ({"host": "127.0.0.1:8081", "origin": "null"}, True, False),
        ({"host": "127.0.0.1:8081"}, True, False),
        ({"host": "127.0.0.1:8081"}, False, True),
        ({"host": "127.0.0.1:8081", "origin": "http://evil.test"}, False, False),
        ({"host": "127.0.0.1:8081", "origin": "http://127.0.0.1:8081", "sec-fetch-site": "cross-site"}, True, False),
    ],
    ids=[
        "same-origin",
        "same-referer",
        "foreign-origin",
        "other-port",
        "null-origin",
        "no-origin-for-a-form",
        "no-origin-for-a-script",
        "foreign-origin-for-a-script",
        "sec-fetch-cross-site",
    ],
)
def test_same_origin(headers: dict[str, str], required: bool, expected: bool) -> None:
    """Only relay's own origin passes; a form must name one, a script need not."""
    assert same_origin(Headers(headers), required=required) is expected


def test_form_tokens_are_bound_to_their_purpose_and_process() -> None:
    """A token works for its own task only, and not in another relay process (another key)."""
    tokens = CsrfTokens()
    token = tokens.token("replay:a")
    assert tokens.valid("replay:a", token)
    assert not tokens.valid("replay:b", token)
    assert not tokens.valid("replay:a", None)
    assert not tokens.valid("replay:a", token[:-1])
    assert not CsrfTokens().valid("replay:a", token)


class Downloads:
    """A stand-in archive whose pending tasks the test chooses."""

    def __init__(self, pending: set[str]) -> None:
        self.waiting = pending

    def pending(self, task_id: str) -> bool:
        return task_id in self.waiting

    def files(self, task_id: str) -> list[str]:
        return []


def _job(job_id: int, task: str | None) -> Job:
    return Job(job_id, f"k{job_id}", {}, task, job_id, 0.0, 0)


def test_after_archived_holds_jobs_of_tasks_still_downloading(tmp_path: Path) -> None:
    """plan(): an `after = "archived"` target waits for the task's downloads; other targets never wait."""
    targets = (target(name="late", after="archived"), target(name="now"))
    kind = ForwardKind(targets, DeliveryStore(tmp_path / "c.json"), parse_settings({}, {}).notify, Metrics())
    kind.archive = Downloads({"busy"})
    due = [_job(1, "busy"), _job(2, "idle"), _job(3, None)]
    groups, wait = kind.plan("late", due, 100.0)
    assert [[j.id for j in g] for g in groups] == [[2]]  # one at a time per target
    assert wait is not None
    assert wait > 100.0
    groups, wait = kind.plan("now", due, 100.0)
    assert [[j.id for j in g] for g in groups] == [[1]]
    assert wait is None
    kind.archive = Downloads(set())
    assert kind.plan("late", due[:1], 100.0) == ([due[:1]], None)
