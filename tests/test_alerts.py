"""Alerts through real Apprise to capture servers on 127.0.0.1: content, routing, retries, restarts, bursts."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx

from relay.messages import build, category
from relay.payloads import extract
from tests.conftest import CaptureServer, wait_for
from tests.family import FAMILY, TRACK, music


def json_url(server: CaptureServer, path: str = "hook") -> str:
    return f"json://127.0.0.1:{server.port}/{path}"


def test_success_alert_names_tracks_with_links(make_relay: Any, capture: CaptureServer) -> None:
    """A complete callback alerts once with the title, duration as m:ss, tags, model and both links."""
    relay = make_relay(notify={"urls": [json_url(capture)]})
    started = time.monotonic()
    assert relay.post(music()).status_code == 200
    body = wait_for(capture.json_bodies)[0]
    assert "Iron Man" in body["title"]
    assert "succe" in body["title"].lower() or "ready" in body["title"].lower()
    for text in ("3:18", "electrifying, rock", "chirp-v3-5", TRACK["audio_url"], TRACK["image_url"]):
        assert text in body["message"]
    assert "None" not in body["message"]
    assert "null" not in body["message"]
    print(f"alert latency {time.monotonic() - started:.3f} s")


def test_failure_alert_explains_the_code(make_relay: Any, capture: CaptureServer) -> None:
    """A failure alert carries the task id, the code, its meaning and the provider's msg."""
    relay = make_relay(notify={"urls": [json_url(capture)]})
    relay.post(FAMILY["music-error-null-data"][0])
    body = wait_for(capture.json_bodies)[0]
    assert "failed" in body["title"].lower()
    for text in ("e1", "451", "could not be downloaded", "Unable to download source audio"):
        assert text in body["message"]


def test_every_kind_builds_a_clean_message() -> None:
    """Each family member that alerts gets a message without None/null or empty labels."""
    for name, (payload, _) in FAMILY.items():
        doc = {**extract(payload).as_fields(), "task_state": None, "fingerprint": name}
        if category(doc, ("complete", "error", "first", "text")) is None:
            continue
        message = build(doc)
        for text in (message.title, message.markdown, message.text):
            assert "None" not in text, name
            assert "null" not in text, name
            assert ": \n" not in text + "\n", name


def test_tag_routing(make_relay: Any, capture: CaptureServer) -> None:
    """Untagged targets get everything; `success` and `failure` targets only their kind."""
    relay = make_relay(
        notify={
            "urls": [
                json_url(capture, "all"),
                "success=" + json_url(capture, "ok"),
                "failure=" + json_url(capture, "ko"),
            ]
        }
    )
    relay.post(music(task="good"))
    relay.post(FAMILY["music-error-null-data"][0])
    wait_for(lambda: len(capture.requests) >= 4)
    time.sleep(1)
    paths = sorted(r["path"] for r in capture.requests)
    assert paths == ["/all", "/all", "/ko", "/ok"]


def test_duplicates_alert_once_also_across_restart(make_relay: Any, capture: CaptureServer) -> None:
    """Retried deliveries of one outcome alert once, also when the retry arrives after a restart."""
    relay = make_relay(notify={"urls": [json_url(capture)]})
    for _ in range(3):
        relay.post(music(task="dup"))
    wait_for(lambda: len(capture.requests) == 1)
    assert relay.stop() == 0
    relay.start()
    relay.post(music(task="dup"))
    relay.post(music(task="other"))
    wait_for(lambda: len(capture.requests) == 2)
    time.sleep(1)
    assert len(capture.requests) == 2


def test_hanging_target_never_delays_the_ack(make_relay: Any, capture: CaptureServer) -> None:
    """While a target holds an alert, callbacks are still acknowledged; alerts arrive once it recovers."""
    capture.hang.set()
    relay = make_relay(notify={"urls": [json_url(capture) + "?rto=600&cto=5"], "timeout": 600})
    assert relay.post(music(task="h0")).status_code == 200
    wait_for(lambda: capture.held == 1, timeout=60)
    # The first alert is now held at the target for as long as the test wants: acknowledgements that
    # waited for it would never come.
    for n in (1, 2):
        assert relay.post(music(task=f"h{n}")).status_code == 200
    assert capture.held == 1  # the first alert is still held, so no ack above waited for it
    capture.hang.clear()
    wait_for(
        lambda: (
            {b["title"] for b in capture.json_bodies()}
            and len({b["message"].split("Task: ")[-1] for b in capture.json_bodies()}) == 3
        ),
        timeout=60,
    )


def test_failing_target_is_retried_until_it_recovers(make_relay: Any, capture: CaptureServer) -> None:
    """A target answering 500 is retried with backoff; the alert arrives once, after it recovers."""
    capture.fail_next = 3
    relay = make_relay(notify={"urls": [json_url(capture)]})
    relay.post(music(task="retry"))
    wait_for(lambda: len(capture.requests) == 1, timeout=60)
    shown = wait_for(lambda: "sent" in (out := relay.cli("show", "retry").stdout) and out)
    assert "4 attempt" in shown


def test_pending_alerts_survive_a_restart(make_relay: Any, capture: CaptureServer) -> None:
    """Alerts pending at shutdown are delivered after restart, each exactly once."""
    capture.fail_next = 10_000
    relay = make_relay(notify={"urls": [json_url(capture)], "retry_base": 0.5})
    for n in range(3):
        relay.post(music(task=f"p{n}"))
    time.sleep(2)
    assert relay.stop() == 0
    capture.fail_next = 0
    relay.start()
    wait_for(lambda: len(capture.requests) == 3, timeout=60)
    time.sleep(1.5)
    titles = [b["message"].split("Task: ")[-1] for b in capture.json_bodies()]
    assert sorted(titles) == ["p0", "p1", "p2"]


def test_dead_target_is_given_up_and_visible(make_relay: Any, capture: CaptureServer) -> None:
    """After give_up_after, a failing alert is dead: /healthz is unhealthy and `relay show` says so."""
    capture.fail_next = 10_000
    relay = make_relay(notify={"urls": [json_url(capture)], "give_up_after": 0.0005})
    relay.post(music(task="gone"))
    health = wait_for(lambda: (r := httpx.get(f"{relay.admin}/healthz")).status_code == 503 and r, timeout=60)
    assert health.json()["alerts"]["dead"] == 1
    assert "[dead]" in relay.cli("show", "gone").stdout
    assert " dead " in relay.cli("log").stdout


def test_failed_attempts_do_not_use_up_the_burst_allowance(make_relay: Any, capture: CaptureServer) -> None:
    """Retries that reached nobody are not pushes: once the target recovers, the alert goes out on its own."""
    capture.fail_next = 6  # twice the burst limit
    relay = make_relay(notify={"urls": [json_url(capture)], "burst_limit": 3, "burst_window": 3600})
    relay.post(music(task="flaky"))
    wait_for(lambda: capture.requests, timeout=60)
    relay.post(music(task="next"))
    wait_for(lambda: len(capture.requests) == 2, timeout=60)
    titles = [b["title"] for b in capture.json_bodies()]
    assert not any("updates" in t for t in titles), titles


def test_burst_is_folded_into_a_digest(make_relay: Any, capture: CaptureServer) -> None:
    """30 tasks finishing at once give burst_limit pushes and one digest with the rest."""
    relay = make_relay(notify={"urls": [json_url(capture)], "burst_limit": 3, "burst_window": 3})
    # The target holds the first alert until all 30 are recorded, however slowly this machine posts them.
    capture.hang.set()
    for n in range(30):
        relay.post(music(task=f"b{n}"))
    wait_for(lambda: capture.held >= 1, timeout=60)
    capture.hang.clear()
    wait_for(lambda: any("updates" in b["title"] for b in capture.json_bodies()), timeout=60)
    time.sleep(1)
    bodies = capture.json_bodies()
    digests = [b for b in bodies if "updates" in b["title"]]
    singles = len(bodies) - len(digests)
    assert singles <= 3
    assert len(digests) == 1
    assert singles + int(digests[0]["title"].split()[1]) == 30


def test_email_and_form_targets(make_relay: Any, capture: CaptureServer, smtp: Any) -> None:
    """mailto:// into an aiosmtpd server and form:// to a custom host both receive the alert."""
    relay = make_relay(
        notify={
            "urls": [
                f"mailto://127.0.0.1:{smtp.port}?from=relay@example.com&to=me@example.com",
                f"form://127.0.0.1:{capture.port}/form",
            ]
        }
    )
    relay.post(music(task="mail"))
    wait_for(lambda: smtp.messages and capture.requests, timeout=60)
    assert b"Iron Man" in smtp.messages[0]
    assert b"Iron+Man" in capture.requests[0]["body"] or b"Iron Man" in capture.requests[0]["body"]


def test_notify_test_reports_each_target(make_relay: Any, capture: CaptureServer) -> None:
    """`relay notify-test` prints each masked target with ok/failed and exits non-zero on a failure."""
    relay = make_relay(start=False, notify={"urls": [json_url(capture), "json://127.0.0.1:1/closed"]})
    result = relay.cli("notify-test")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok")
    assert lines[1].startswith("FAILED")
    assert len(capture.requests) == 1


def test_check_names_a_bad_apprise_url(make_relay: Any) -> None:
    """`relay check` refuses an Apprise URL it cannot use, naming the key, exit 3."""
    relay = make_relay(start=False, notify={"urls": ["slak://nothing"]})
    result = relay.cli("check")
    assert result.returncode == 3
    assert "notify.urls[0]" in result.stderr


def test_kill_9_repeats_at_most_one_alert_per_crash(make_relay: Any, capture: CaptureServer) -> None:
    """At least once: a crash between sending and recording can repeat one alert per target, never more.

    Issue #10.8. Each cycle posts distinct outcomes and kills relay with SIGKILL while alerts are going out;
    after a clean final run every outcome has been alerted, and the repeats are counted and bounded.
    """
    relay = make_relay(notify={"urls": [json_url(capture)], "burst_limit": 10_000})
    crashes, per_cycle = 3, 8
    for cycle in range(crashes):
        for n in range(per_cycle):
            assert relay.post(music(task=f"k{cycle}-{n}")).status_code == 200
        wait_for(lambda: capture.requests, timeout=60)  # alerts are on their way
        relay.stop(signal.SIGKILL)
        relay.start()
    expected = {f"k{c}-{n}" for c in range(crashes) for n in range(per_cycle)}
    wait_for(lambda: {b["message"].split("Task: ")[-1] for b in capture.json_bodies()} >= expected, timeout=120)
    time.sleep(1)  # anything still in flight lands before counting
    alerted = [b["message"].split("Task: ")[-1] for b in capture.json_bodies()]
    repeats = len(alerted) - len(set(alerted))
    print(f"{len(alerted)} pushes for {len(expected)} outcomes across {crashes} kill -9: {repeats} repeated")
    assert repeats <= crashes
