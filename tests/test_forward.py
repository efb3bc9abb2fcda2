"""Forwards through a real relay to capture servers on 127.0.0.1: signed bodies checked with the Standard Webhooks
library, retries across a restart, filters, an exec target, replay from the CLI and from the page."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import CaptureServer, RelayProcess, free_port, wait_for
from tests.family import FAMILY, music

SECRET = "whsec_" + base64.b64encode(b"relay-forward-test-key-32-bytes!").decode()


def hook(server: CaptureServer, name: str = "ha", **keys: Any) -> dict[str, Any]:
    """A [[forward]] table pointing at a capture server."""
    return {"name": name, "url": f"http://127.0.0.1:{server.port}/api/webhook/{name}", "secret": SECRET, **keys}


def verified(request: dict[str, Any]) -> Any:
    """The body of a captured request, after the reference library checked its signature."""
    return Webhook(SECRET).verify(request["body"], request["headers"])


def show(relay: RelayProcess, task: str) -> dict[str, Any]:
    """`relay show TASK --json`."""
    return json.loads(relay.cli("show", task, "--json", check=True).stdout)


def forward_states(relay: RelayProcess, task: str) -> list[str]:
    """The state of each forward entry of a task, in order."""
    return [entry["state"] for job in show(relay, task)["forwards"] for entry in job["targets"]]


def test_signed_forward_carries_the_original_bytes(make_relay: Any, capture: CaptureServer) -> None:
    """A callback reaches the target byte for byte, signed, and its result shows in show, the API and metrics."""
    relay = make_relay(forward=[hook(capture)])
    body = json.dumps(music(task="fw1"), indent=2).encode()  # pretty-printed: re-serializing would change it
    assert relay.post(body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
    [request] = wait_for(lambda: capture.requests)
    assert request["path"] == "/api/webhook/ha"
    assert request["body"] == body
    assert request["headers"]["content-type"] == "application/json; charset=utf-8"
    assert verified(request)["data"]["task_id"] == "fw1"
    delivery_id = show(relay, "fw1")["deliveries"][0]["id"]
    assert request["headers"]["webhook-id"].startswith(f"msg_{delivery_id}_")
    assert "relay-replay" not in request["headers"]
    wait_for(lambda: forward_states(relay, "fw1") == ["sent"])
    entry = show(relay, "fw1")["forwards"][0]["targets"][0]
    assert (entry["target"], entry["status"], entry["attempts"]) == ("ha", 200, 1)
    text = relay.cli("show", "fw1", check=True).stdout
    assert "ha: sent (1 attempt, HTTP 200)" in text
    api = httpx.get(f"{relay.admin}/api/tasks/fw1", timeout=10).json()
    assert api["forwards"][0]["targets"][0]["state"] == "sent"
    metrics = httpx.get(f"{relay.admin}/metrics", timeout=10).text
    assert 'relay_forwards_total{result="ok",target="ha"} 1.0' in metrics
    assert SECRET not in relay.read_output()


def test_failing_target_is_retried_until_it_answers(make_relay: Any, capture: CaptureServer) -> None:
    """500s are retried with backoff; the target gets the delivery once it answers, with the same webhook-id."""
    capture.fail_next = 2
    relay = make_relay(forward=[hook(capture)])
    relay.post(music(task="fw2"))
    wait_for(lambda: capture.requests)
    wait_for(lambda: forward_states(relay, "fw2") == ["sent"])
    entry = show(relay, "fw2")["forwards"][0]["targets"][0]
    assert entry["attempts"] == 3
    assert len(capture.requests) == 1
    verified(capture.requests[0])


def test_a_hanging_target_never_delays_the_acknowledgement(make_relay: Any, capture: CaptureServer) -> None:
    """While a target holds a forward open, callbacks are still acknowledged; the queue catches up afterwards."""
    capture.hang.set()
    relay = make_relay(forward=[hook(capture, timeout=120)])
    relay.post(music(task="h1"))
    wait_for(lambda: capture.held == 1)
    assert relay.post(music(task="h2")).status_code == 200  # answered while the first forward hangs
    assert relay.post(music(task="h3")).status_code == 200
    capture.hang.clear()
    wait_for(lambda: len(capture.requests) == 3)
    assert [verified(r)["data"]["task_id"] for r in capture.requests] == ["h1", "h2", "h3"]  # in order


def test_target_down_during_the_callback_receives_it_after_a_restart(make_relay: Any) -> None:
    """A target that is down when the callback arrives gets it once it is back, also when relay restarted between."""
    port = free_port()
    target = {"name": "late", "url": f"http://127.0.0.1:{port}/in", "secret": SECRET}
    relay = make_relay(forward=[target])
    assert relay.post(music(task="fw3")).status_code == 200
    wait_for(lambda: (show(relay, "fw3")["forwards"][0]["targets"][0]["attempts"] or 0) >= 1)
    failed = show(relay, "fw3")["forwards"][0]["targets"][0]
    assert failed["state"] == "pending"
    assert "ConnectError" in failed["error"]
    assert relay.stop() == 0
    server = CaptureServer(port)
    try:
        relay.start()
        [request] = wait_for(lambda: server.requests)
        assert verified(request)["data"]["task_id"] == "fw3"
        wait_for(lambda: forward_states(relay, "fw3") == ["sent"])
    finally:
        server.close()


def test_filters_choose_the_targets_in_a_real_relay(make_relay: Any, capture: CaptureServer) -> None:
    """Each target gets only what its kinds, stages and ok filters let through; a repeated body goes nowhere."""
    relay = make_relay(
        forward=[
            hook(capture, "everything"),
            hook(capture, "complete", stages=["complete"]),
            hook(capture, "failures", ok=False),
            hook(capture, "lyrics", kinds=["lyrics"]),
        ]
    )
    relay.post(music("first", task="f1"))
    relay.post(music("complete", task="f1"))
    relay.post(music("complete", task="f1"))  # the provider's retry: a duplicate
    relay.post(FAMILY["music-error-null-data"][0])
    wait_for(lambda: len(capture.requests) >= 5)
    wait_for(lambda: forward_states(relay, "f1") == ["sent", "sent", "sent"])
    got: dict[str, list[str]] = {}
    for request in capture.requests:
        payload = verified(request)
        got.setdefault(request["path"].rsplit("/", 1)[1], []).append(payload["data"]["callbackType"])
    assert {name: sorted(stages) for name, stages in got.items()} == {
        "everything": ["complete", "error", "first"],
        "complete": ["complete"],
        "failures": ["error"],
    }


def test_exec_target_runs_a_script_that_writes_a_file(make_relay: Any, tmp_path: Path) -> None:
    """An exec target runs its command with the delivery on stdin; its exit code shows in `relay show`."""
    out = tmp_path / "imported.txt"
    script = tmp_path / "import.py"
    script.write_text(
        "import json, os, sys\n"
        "delivery = json.load(sys.stdin)\n"
        f"open({str(out)!r}, 'a').write(os.environ['RELAY_TASK_ID'] + ' ' + delivery['tracks'][0]['title'] + '\\n')\n"
        "sys.stderr.write('imported\\n')\n"
    )
    relay = make_relay(
        forward=[{"name": "beets", "exec": [sys.executable, str(script)], "stages": ["complete"], "after": "archived"}]
    )
    relay.post(music("first", task="ex1"))
    relay.post(music("complete", task="ex1"))
    wait_for(lambda: forward_states(relay, "ex1") == ["sent"])
    assert out.read_text() == "ex1 Iron Man\n"
    entry = show(relay, "ex1")["forwards"][0]["targets"][0]
    assert (entry["exit_code"], entry["stderr"]) == (0, "imported")
    assert "beets: sent (1 attempt, exit 0)" in relay.cli("show", "ex1", check=True).stdout


def test_replay_from_the_cli(make_relay: Any, capture: CaptureServer) -> None:
    """`relay replay` sends again, marked and with a fresh webhook-id; --to picks a target; --alerts alerts again."""
    alerts = CaptureServer()
    try:
        relay = make_relay(
            forward=[hook(capture, "ha"), hook(capture, "failures", ok=False)],
            notify={"urls": [f"json://127.0.0.1:{alerts.port}/alert"]},
        )
        relay.post(music(task="rp1"))
        wait_for(lambda: len(capture.requests) == 1 and len(alerts.requests) == 1)
        delivery_id = show(relay, "rp1")["deliveries"][0]["id"]
        first = capture.requests[0]

        result = relay.cli("replay", str(delivery_id), "--alerts", check=True)
        assert f"queued delivery {delivery_id} for ha" in result.stdout
        wait_for(lambda: len(capture.requests) == 2 and len(alerts.requests) == 2)
        again = capture.requests[1]
        assert again["body"] == first["body"]
        assert again["headers"]["relay-replay"] == "1"
        assert again["headers"]["webhook-id"] != first["headers"]["webhook-id"]
        verified(again)

        relay.cli("replay", "--task", "rp1", "--to", "failures", check=True)  # named: whatever its filters say
        wait_for(lambda: len(capture.requests) == 3)
        assert capture.requests[2]["path"] == "/api/webhook/failures"
        wait_for(lambda: forward_states(relay, "rp1") == ["sent", "sent", "sent"])
        assert [job["replay"] for job in show(relay, "rp1")["forwards"]] == [False, True, True]

        for args, message in [
            (("--to", "nobody", str(delivery_id)), "no forward target named nobody"),
            (("999",), "no delivery 999"),
            (("--task", "nope"), "no deliveries for task 'nope'"),
        ]:
            refused = relay.cli("replay", *args)
            assert refused.returncode == 1
            assert message in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        alerts.close()


def test_replay_without_a_running_relay_says_so(make_relay: Any) -> None:
    """With no relay running, `relay replay` is one line and exit 4."""
    relay = make_relay(start=False)
    result = relay.cli("replay", "1")
    assert result.returncode == 4
    assert "no relay is running" in result.stderr


def page_token(relay: RelayProcess, task: str) -> str:
    """The replay form's token from the task page."""
    page = httpx.get(f"{relay.admin}/tasks/{task}", timeout=10).text
    match = re.search(r'name="token" value="([^"]+)"', page)
    assert match, page
    return match[1]


def test_replay_from_the_page(make_relay: Any, capture: CaptureServer) -> None:
    """The page's form replays with its token from relay's origin; the task page shows per-target results."""
    relay = make_relay(forward=[hook(capture)])
    relay.post(music(task="pg1"))
    wait_for(lambda: forward_states(relay, "pg1") == ["sent"])
    page = httpx.get(f"{relay.admin}/tasks/pg1", timeout=10).text
    assert re.search(r'<table id="forwards">.*ha: sent \(HTTP 200\)', page, re.S)
    response = httpx.post(
        f"{relay.admin}/replay",
        data={"task_id": "pg1", "token": page_token(relay, "pg1")},
        headers={"origin": relay.admin},
        timeout=10,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/tasks/pg1?replayed=1"
    wait_for(lambda: len(capture.requests) == 2)
    assert capture.requests[1]["headers"]["relay-replay"] == "1"
    verified(capture.requests[1])


@pytest.mark.parametrize(
    ("with_token", "headers"),
    [
        (False, {"origin": "http://evil.test"}),
        (True, {"origin": "http://evil.test"}),
        (False, "own-origin"),
        (True, {}),
        (True, {"referer": "http://evil.test/page"}),
    ],
    ids=["cross-site-no-token", "cross-site-with-token", "same-origin-no-token", "no-origin", "foreign-referer"],
)
def test_page_replay_refuses_cross_site_posts(
    make_relay: Any, capture: CaptureServer, with_token: bool, headers: Any
) -> None:
    """Without relay's origin and its token, a replay POST is 403 and nothing is sent."""
    relay = make_relay(forward=[hook(capture)])
    relay.post(music(task="pg2"))
    wait_for(lambda: forward_states(relay, "pg2") == ["sent"])
    form = {"task_id": "pg2", **({"token": page_token(relay, "pg2")} if with_token else {})}
    sent = {"origin": relay.admin} if headers == "own-origin" else headers
    response = httpx.post(f"{relay.admin}/replay", data=form, headers=sent, timeout=10)
    assert response.status_code == 403
    api = httpx.post(f"{relay.admin}/api/replay", data={"task_id": "pg2"}, headers=sent, timeout=10)
    assert api.status_code in (403, 415)  # a form body cannot drive the JSON API
    assert len(show(relay, "pg2")["forwards"]) == 1
    assert len(capture.requests) == 1
