"""The public endpoint on a real server: what is acknowledged is on disk, bad input gets a reason.

The cases share one relay (`shared_relay`) and tell their deliveries apart by task id or by order; what each
callback shape becomes is checked in-process in test_payloads.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from relay.cli import cli
from tests.conftest import TOKEN, RelayProcess, build_relay, end_relay, wait_for
from tests.family import FAMILY, music


@pytest.fixture
def relay(shared_relay: RelayProcess) -> RelayProcess:
    """The module's running relay with default settings."""
    return shared_relay


#: server.http values: uvicorn's httptools protocol on uvloop (the default), and h11 on asyncio (the fallback).
STACKS = ["httptools", "h11"]


def _on_stack(tmp_path_factory: pytest.TempPathFactory, stack: str, **server: Any) -> RelayProcess:
    relay = build_relay(tmp_path_factory.mktemp(f"relay-{stack}"), server={"http": stack, **server})
    assert f"HTTP: {stack}" in relay.read_output()
    return relay


@pytest.fixture(scope="module", params=STACKS)
def any_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A running relay on each HTTP stack in turn, shared by the module's tests of what the HTTP layer does."""
    relay = _on_stack(tmp_path_factory, str(request.param))
    yield relay
    end_relay(relay)


@pytest.fixture(scope="module", params=STACKS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay with a small body limit and a short body timeout, on each HTTP stack in turn."""
    relay = _on_stack(tmp_path_factory, str(request.param), max_body_bytes=2048, body_timeout=2)
    yield relay
    end_relay(relay)


def test_acknowledged_callback_is_in_the_tinydb_file(any_stack: RelayProcess) -> None:
    """200 {"status": "received"}, and within 2 s the document is in table `callbacks` with every field."""
    relay = any_stack
    response = relay.post(music(task="in-file"))
    assert response.status_code == 200
    assert response.json() == {"status": "received"}
    doc = wait_for(lambda: next((d for d in relay.deliveries() if d["task_id"] == "in-file"), None), timeout=10)
    for key in (
        "received_at",
        "task_id",
        "stage",
        "code",
        "msg",
        "kind",
        "ok",
        "tracks",
        "duplicate",
        "payload",
    ):
        assert key in doc
    assert doc["payload"] == music(task="in-file")
    assert doc["tracks"][0]["title"] == "Iron Man"
    assert set(doc["tracks"][0]) >= {"id", "title", "audio_url", "image_url", "duration", "tags"}


def test_every_family_shape_is_accepted(relay: RelayProcess) -> None:
    """No callback is rejected for its shape: every family member gets 200 and is kept verbatim."""
    for name, (body, _) in FAMILY.items():
        assert relay.post(body).status_code == 200, name
        assert relay.recorded()[-1]["payload"] == body, name


def test_wrong_token_is_404_and_not_recorded(any_stack: RelayProcess) -> None:
    """A wrong or missing token is 404 and nothing is recorded as a callback."""
    relay = any_stack
    before = len(relay.recorded())
    url = f"http://127.0.0.1:{relay.port}/callback/not-the-token"
    assert httpx.post(url, json=music(task="wrong-token")).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{relay.port}/callback/", json=music(task="wrong-token")).status_code == 404
    relay.post(music(task="marker"))
    assert [d["task_id"] for d in relay.recorded()[before:]] == ["marker"]


def test_other_paths_and_methods(any_stack: RelayProcess) -> None:
    """Everything but POST /callback/{token} is 404/405; admin pages are never served publicly."""
    relay = any_stack
    base = f"http://127.0.0.1:{relay.port}"
    assert httpx.get(f"{base}/callback/{TOKEN}").status_code == 405
    for path in ("/", "/healthz", "/metrics", "/api/callbacks", "/api/url"):
        assert httpx.get(base + path).status_code == 404


@pytest.mark.parametrize("path", [f"/callback/{TOKEN}/", "/callback/wrong-token/", "/callback/x/y/", "/callback//"])
def test_no_redirects_on_the_public_listener(any_stack: RelayProcess, path: str) -> None:
    """No 307 to a URL built from the Host header (plain http behind a TLS tunnel): 404, whatever the token."""
    before = len(any_stack.recorded())
    url = f"http://127.0.0.1:{any_stack.port}{path}"
    for response in (
        httpx.post(url, json=music(), headers={"host": "evil.example.test"}),
        httpx.get(url, headers={"host": "evil.example.test"}),
    ):
        assert response.status_code == 404, (path, response.status_code, response.headers.get("location"))
        assert "location" not in response.headers
    assert len(any_stack.recorded()) == before  # nothing recorded (the module's relay is shared)


BAD_BODIES = {
    "not-json": b"hello",
    "empty": b"",
    "invalid-utf8": b'{"code": 200, "msg": "\xff\xfe"}',
    "nan": b'{"code": 200, "duration": NaN}',
    "infinity": b'{"x": -Infinity}',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge-integer": b'{"code": ' + b"9" * 5000 + b"}",
    "huge-float": b'{"data": {"duration": 1e400}}',
    "huge-negative-float": b'{"x": [-1e999]}',
    "truncated": b'{"code": 200, "data": {',
}


@pytest.mark.parametrize("name", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_bad_input_gets_400_with_reason_and_raw_bytes_recorded(relay: RelayProcess, name: str) -> None:
    """Bad bodies get 400 with a reason (never a 5xx), and their bytes land in the `rejected` table."""
    raw = BAD_BODIES[name]
    response = relay.post(raw)
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    rejected = CliRunner().invoke(cli, ["log", "--rejected", "--json", "--config", str(relay.config_path)])
    assert rejected.exit_code == 0, rejected.output
    doc = json.loads(rejected.stdout.splitlines()[-1])
    assert doc["size"] == len(raw)
    assert doc["reason"] == response.json()["error"]
    recorded = doc["body"].encode() if "body" in doc else __import__("base64").b64decode(doc["body_base64"])
    assert recorded == raw
    assert relay.proc is not None
    assert relay.proc.poll() is None


def test_non_object_roots_are_kept(relay: RelayProcess) -> None:
    """JSON that is not an object is still a callback relay keeps (kind unknown), not an error."""
    for body in ([1, 2], "text", 42, None):
        assert relay.post(json.dumps(body).encode()).status_code == 200
    assert [d["payload"] for d in relay.recorded()[-4:]] == [[1, 2], "text", 42, None]


def test_body_over_the_limit_is_413_even_without_content_length(limited: RelayProcess) -> None:
    """max_body_bytes is enforced while reading, also for chunked bodies."""
    relay = limited
    big = json.dumps({"pad": "x" * 5000}).encode()
    assert relay.post(big).status_code == 413

    def chunks() -> Any:
        yield b'{"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    assert httpx.post(relay.callback_url, content=chunks()).status_code == 413
    assert relay.post(music()).status_code == 200


def test_a_stalled_sender_does_not_block_others(limited: RelayProcess) -> None:
    """A sender that stops mid-body gets 408 after body_timeout; others are served meanwhile."""
    relay = limited
    stalled = socket.create_connection(("127.0.0.1", relay.port))
    stalled.sendall(
        f"POST /callback/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f'Content-Length: 1000\r\n\r\n{{"code":'.encode()
    )
    for n in range(5):
        assert relay.post(music(task=f"t{n}")).status_code == 200
    stalled.settimeout(30)
    assert b" 408 " in stalled.recv(4096)
    stalled.close()


def test_repeated_keys_are_accepted_and_the_body_kept_verbatim(relay: RelayProcess) -> None:
    """`{"a":1,"a":2}` is a callback like any other (200), and `payload_raw` keeps the text `payload` cannot."""
    raw = b'{"code": 200, "msg": "first", "msg": "second", "data": {"task_id": "dup-keys"}}'
    assert relay.post(raw).status_code == 200
    # The module's relay is shared: find this test's delivery by its task id.
    doc = wait_for(lambda: next((d for d in relay.deliveries() if d["task_id"] == "dup-keys"), None))
    assert doc["payload"]["msg"] == "second"
    assert doc["payload_raw"] == raw.decode()
    assert doc["task_id"] == "dup-keys"


def test_duplicates_are_flagged_and_each_delivery_kept(relay: RelayProcess) -> None:
    """A retried delivery is its own record with duplicate=true."""
    for _ in range(3):
        assert relay.post(music(task="dup")).status_code == 200
    docs = [d for d in relay.recorded() if d["task_id"] == "dup"]
    assert [d["duplicate"] for d in docs] == [False, True, True]


def test_concurrent_identical_deliveries_flag_all_but_one(relay: RelayProcess) -> None:
    """Even arriving at once, only one of several identical deliveries is the original."""
    threads = [threading.Thread(target=relay.post, args=(music(task="same"),)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    docs = [d for d in relay.recorded() if d["task_id"] == "same"]
    assert len(docs) == 8
    assert sum(not d["duplicate"] for d in docs) == 1


def test_task_state_moves_forward_only(relay: RelayProcess) -> None:
    """A late `first` after `complete` leaves the task complete in the API and the CLI."""
    for stage in ("text", "complete", "first"):
        relay.post(music(stage, task="fw"))
    view = wait_for(
        lambda: (
            (r := httpx.get(f"{relay.admin}/api/tasks/fw")).status_code == 200
            and len(r.json()["deliveries"]) == 3
            and r.json()
        )
    )
    assert view["state"] == "complete"
    assert relay.cli("show", "fw").stdout.startswith("task fw: complete")
