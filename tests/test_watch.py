"""Submit, watch and poll against the loopback fake provider, with real relay processes and real alerts."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.provider import signature
from relay.store import read_all
from tests import fake_ngrok
from tests import provider_answers as pa
from tests.conftest import CaptureServer, RelayProcess, wait_for
from tests.fake_provider import PROVIDER_KEY, FakeProvider

FAST = {"poll_after": 0.5, "poll_interval": 0.3, "give_up_after": 3600}


@pytest.fixture
def ngrok_agent(tmp_path: Path) -> dict[str, str]:
    """tunnel settings pointing pyngrok at the fake ngrok agent (tests/fake_ngrok.py)."""
    return fake_ngrok.tunnel_settings(tmp_path)


def start(make_relay: Any, fake: FakeProvider, /, capture: CaptureServer | None = None, **settings: Any) -> Any:
    """A relay pointed at the fake provider (key from RELAY_PROVIDER_KEY), alerting to `capture` if given."""
    overrides: dict[str, Any] = {"provider": {"base_url": fake.url, **FAST, **settings.pop("provider", {})}}
    if capture is not None:
        overrides["notify"] = {"urls": [f"json://127.0.0.1:{capture.port}/"]}
    return make_relay(env={"RELAY_PROVIDER_KEY": PROVIDER_KEY, **settings.pop("env", {})}, **overrides, **settings)


def watched(relay: RelayProcess, task_id: str) -> dict[str, Any] | None:
    """The task's row in the running relay's watch list."""
    rows = httpx.get(f"{relay.admin}/api/watch", timeout=10).json()["watched"]
    return next((row for row in rows if row["task_id"] == task_id), None)


def state_is(relay: RelayProcess, task_id: str, state: str) -> Callable[[], bool]:
    return lambda: (watched(relay, task_id) or {}).get("state") == state


def logged(relay: RelayProcess, task_id: str) -> list[dict[str, Any]]:
    """The task's deliveries, read as the CLI reads them (journal included, so nothing waits for a flush)."""
    return [d for d in read_all(relay.log_path) if d.get("task_id") == task_id]


def titles(capture: CaptureServer) -> list[str]:
    return [body["title"] for body in capture.json_bodies()]


def alert_once_more(relay: RelayProcess, capture: CaptureServer, seen: int) -> list[str]:
    """A sentinel: a fresh failure callback alerts, and alerts go out in order; so once its alert is in, any alert
    queued before it is too. Returns the titles then."""
    relay.post({"code": 500, "msg": "sentinel", "data": {"callbackType": "error", "task_id": f"sentinel-{seen}"}})
    wait_for(lambda: any(f"sentinel-{seen}" in b["message"] for b in capture.json_bodies()))
    return titles(capture)


def test_submit_fills_callback_url_sends_the_key_and_watches(make_relay: Any, provider: FakeProvider) -> None:
    """`relay submit` POSTs the typed params with `relay url`'s URL (plus the kind), the Bearer key, and watches."""
    relay = start(make_relay, provider, provider={"poll_after": 3600})
    result = relay.cli(
        "submit",
        "upload-extend",
        "--param",
        "uploadUrl=https://example.test/a.mp3",
        "--param",
        "defaultParamFlag=true",
        "--param",
        "continueAt=12.5",
        "--param",
        "instrumental=false",
        "--param",
        "model=V4_5",
        "--param",
        "negativeTags=null",
        check=True,
    )
    task_id = result.stdout.strip()
    sent = provider.submits()[0]
    assert sent.path == "/api/v1/generate/upload-extend"
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    url = relay.cli("url", check=True).stdout.strip()
    assert sent.body["callBackUrl"] == f"{url}?kind=music"
    assert sent.body | {"callBackUrl": None} == {
        "uploadUrl": "https://example.test/a.mp3",
        "defaultParamFlag": True,
        "continueAt": 12.5,
        "instrumental": False,
        "model": "V4_5",
        "negativeTags": None,
        "callBackUrl": None,
    }
    assert task_id == "fake-music-0001"
    row = watched(relay, task_id)
    assert row is not None
    assert (row["state"], row["kind"], row["source"], row["operation"]) == (
        "waiting",
        "music",
        "submit",
        "upload-extend",
    )
    listing = relay.cli("watch", "--list", check=True).stdout
    assert task_id in listing
    assert "waiting" in listing
    lines = relay.cli("watch", "--list", "--json", check=True).stdout.splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == [task_id]
    assert provider.polls() == []


def test_submit_refuses_without_public_url_or_on_a_provider_refusal(make_relay: Any, provider: FakeProvider) -> None:
    """No public URL: refused before anything is sent. A provider refusal: one line with its code, exit 1."""
    relay = start(make_relay, provider, tunnel={"provider": "none", "public_url": ""})
    result = relay.cli("submit", "generate", "--param", "prompt=x")
    assert result.returncode != 0
    assert "no public callback URL" in result.stderr
    assert provider.submits() == []
    relay.stop()
    relay = start(make_relay, provider)
    provider.fail_next(1, {"code": 413, "msg": "prompt too long"})
    result = relay.cli("submit", "generate", "--param", "prompt=x")
    assert result.returncode == 1
    assert result.stderr.strip() == "relay: generate: the provider refused the request with code 413: prompt too long"
    assert "Traceback" not in result.stderr


def test_missed_callback_is_polled_recorded_and_alerted_once(
    make_relay: Any, provider: FakeProvider, capture: CaptureServer
) -> None:
    """No callback: after poll_after the task is polled until it ends, recorded as source poll, alerted once;
    the late callback is a duplicate outcome and alerts nothing more."""
    relay = start(make_relay, provider, capture)
    provider.script_next_submit(pa.pending("music", "x"), pa.music("x", "FIRST_SUCCESS"), pa.success("music", "x"))
    task_id = relay.cli("submit", "generate", "--param", "prompt=rain", check=True).stdout.strip()
    wait_for(state_is(relay, task_id, "done"))
    polled = logged(relay, task_id)
    assert [(d["source"], d["stage"], d["ok"]) for d in polled] == [("poll", "first", True), ("poll", "complete", True)]
    assert polled[-1]["tracks"][0]["audio_url"] == pa.SUNO_TRACK["audioUrl"]
    assert polled[-1]["payload"]["data"]["status"] == "SUCCESS"
    assert len(provider.polls(task_id)) == 3
    wait_for(lambda: any("Infernal Reign" in t for t in titles(capture)))

    late = provider.tasks[task_id]
    assert late.callback_url is not None
    body = {
        "code": 200,
        "msg": "All generated successfully.",
        "data": {
            "callbackType": "complete",
            "task_id": task_id,
            "data": [{"id": "6471dc8b-0001", "audio_url": pa.SUNO_TRACK["audioUrl"], "title": "Infernal Reign"}],
        },
    }
    assert httpx.post(relay.callback_url + "?kind=music", json=body).status_code == 200
    callback = wait_for(lambda: [d for d in logged(relay, task_id) if d.get("source") == "callback"])[0]
    assert (callback["kind"], callback["duplicate"], callback["task_state"]) == ("music", True, "complete")
    everything = alert_once_more(relay, capture, 1)
    assert sum("Infernal Reign" in t for t in everything) == 1
    assert len(provider.polls(task_id)) == 3
    shown = relay.cli("show", task_id, check=True).stdout
    assert "watched (music): done, polled 3 times, provider says SUCCESS" in shown
    assert "(polled)" in shown


def test_callback_before_poll_after_means_never_polled(make_relay: Any, provider: FakeProvider) -> None:
    """A task whose final callback came in time is never polled, while one without a callback is."""
    # The callback follows its watch at once; poll_after leaves a busy machine ample room for that, and the silent
    # task is watched only once the first is done, so its poll proves poll_after passed for the first one too.
    relay = start(make_relay, provider, provider={"poll_after": 4})
    relay.cli("watch", "called-back", "--kind", "wav", check=True)
    body = {"code": 200, "msg": "success", "data": {"task_id": "called-back", "audioWavUrl": "https://e.test/w.wav"}}
    assert relay.post(body).status_code == 200
    wait_for(state_is(relay, "called-back", "done"))
    relay.cli("watch", "silent", "--kind", "wav", check=True)
    provider.script("silent", "wav")
    wait_for(lambda: provider.polls("silent"))  # poll_after has passed for both
    assert provider.polls("called-back") == []
    assert relay.cli("show", "called-back", check=True).stdout.splitlines()[1] == "watched (wav): done"


def test_401_stops_polling_with_one_alert_saying_why(
    make_relay: Any, provider: FakeProvider, capture: CaptureServer
) -> None:
    """A refused key stops all polling with one alert naming what to set; a working manual poll resumes it."""
    relay = start(make_relay, provider, capture, env={"RELAY_PROVIDER_KEY": "pk-wrong-key-000000"})
    for task in ("t1", "t2", "t3"):
        relay.cli("watch", task, check=True)
    stopped = wait_for(lambda: httpx.get(f"{relay.admin}/api/watch").json()["stopped"])
    assert "RELAY_PROVIDER_KEY" in stopped
    requests = len(provider.polls())
    assert requests <= 3  # at most the polls already in flight together
    everything = alert_once_more(relay, capture, 1)
    stop_alerts = [b for b in capture.json_bodies() if "stopped" in b["title"]]
    assert len(stop_alerts) == 1
    assert "RELAY_PROVIDER_KEY" in stop_alerts[0]["message"]
    assert "pk-wrong-key" not in json.dumps(everything) + json.dumps(capture.json_bodies())
    assert len(provider.polls()) == requests
    rows = httpx.get(f"{relay.admin}/api/watch").json()["watched"]
    assert {row["state"] for row in rows} <= {"waiting", "polling"}  # they wait for a working key
    result = relay.cli("poll", "t1")
    assert result.returncode == 1
    assert "code 401" in result.stderr
    assert "pk-wrong-key" not in result.stderr


@pytest.mark.parametrize("domain", ["", "relay-home.ngrok.app"], ids=["new-url", "same-url"])
def test_tunnel_outage_polls_tasks_in_flight_at_once(
    make_relay: Any, provider: FakeProvider, ngrok_agent: dict[str, str], tmp_path: Path, domain: str
) -> None:
    """The ngrok agent dies and comes back (on a new URL, or the same static one): watched tasks are polled then,
    not after poll_after."""
    state_file = tmp_path / "fake.json"
    relay = start(
        make_relay,
        provider,
        provider={"poll_after": 3600},
        tunnel={**ngrok_agent, "domain": domain},
        env={"FAKE_NGROK_STATE": str(state_file)},
    )
    relay.cli("watch", "in-flight", "--kind", "video", check=True)
    provider.script("in-flight", "video", pa.pending("video", "in-flight"))
    first = json.loads(state_file.read_text())
    assert provider.polls("in-flight") == []
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: provider.polls("in-flight"), timeout=60)
    assert (json.loads(state_file.read_text())["public_url"] == first["public_url"]) is bool(domain)
    assert watched(relay, "in-flight")["state"] == "polling"  # type: ignore[index]


def test_kill_9_with_watched_tasks_resumes_polling(make_relay: Any, provider: FakeProvider) -> None:
    """The watch list survives kill -9 (its file parses) and the restarted relay polls the task to its end."""
    from tinydb import TinyDB

    relay = start(make_relay, provider, provider={"poll_after": 0.2, "poll_interval": 0.2})
    provider.script("long", "stems", *[pa.pending("stems", "long")] * 3)
    relay.cli("watch", "long", "--kind", "stems", check=True)
    wait_for(lambda: provider.polls("long"))
    relay.stop(signal.SIGKILL)
    with TinyDB(relay.dir / "state" / "watch.json", access_mode="r") as db:  # parses at every instant
        json.dumps(db.table("tasks").all())
    provider.script("long", "stems", pa.success("stems", "long"))
    before = len(provider.polls("long"))
    relay.start()
    wait_for(state_is(relay, "long", "done"))
    assert len(provider.polls("long")) > before
    recorded = logged(relay, "long")
    assert [(d["source"], d["kind"], d["ok"]) for d in recorded] == [("poll", "stems", True)]
    assert {link["label"] for link in recorded[0]["links"]} == {"instrumental", "vocals", "backing vocals"}


def test_lost_after_give_up_with_one_alert(make_relay: Any, provider: FakeProvider, capture: CaptureServer) -> None:
    """A task still pending past give_up_after is `lost`, and one alert says so."""
    relay = start(make_relay, provider, capture, provider={"give_up_after": 1.5})
    provider.script("forever", "cover", pa.pending("cover", "forever"))
    relay.cli("watch", "forever", "--kind", "cover", check=True)
    wait_for(state_is(relay, "forever", "lost"))
    alert_once_more(relay, capture, 1)
    lost = [b for b in capture.json_bodies() if "no result for task forever after 1.5 s" in b["title"]]
    assert len(lost) == 1
    assert "GENERATING" in lost[0]["message"] or "PENDING" in lost[0]["message"]
    assert "lost" in relay.cli("watch", "--list", check=True).stdout
    relay.stop()
    offline = relay.cli("watch", "--list", "--json", check=True)
    assert json.loads(offline.stdout)["state"] == "lost"
    assert "not running" in offline.stderr


def test_bad_answers_are_retried_until_the_result(make_relay: Any, provider: FakeProvider) -> None:
    """HTML pages, code 500 on HTTP 200, rate limiting and a slow answer are retried; the result still lands."""
    relay = start(make_relay, provider, provider={"timeout": 1.0})
    provider.script("bumpy", "lyrics", pa.success("lyrics", "bumpy"))
    poll_path = ("/api/v1/lyrics/record-info",)
    provider.fail_next(1, "html", paths=poll_path)
    provider.fail_next(1, {"code": 500, "msg": "Server Error"}, paths=poll_path)
    provider.fail_next(1, {"code": 430, "msg": "Your call frequency is too high."}, paths=poll_path)
    provider.fail_next(1, {"code": 455, "msg": "maintenance"}, paths=poll_path)
    provider.fail_next(1, None, delay=3.0, paths=poll_path)
    relay.cli("watch", "bumpy", "--kind", "lyrics", check=True)
    wait_for(state_is(relay, "bumpy", "done"), timeout=120)
    assert len(provider.polls("bumpy")) == 6
    recorded = logged(relay, "bumpy")
    assert [(d["kind"], d["ok"], d["lyrics"][0]["title"]) for d in recorded] == [("lyrics", True, "City")]
    output = relay.read_output()
    for line in ("HTML page", "code 500", "code 430", "code 455", "did not answer in time"):
        assert line in output, line


def test_unknown_task_is_given_up_with_one_alert(
    make_relay: Any, provider: FakeProvider, capture: CaptureServer
) -> None:
    """A task id the provider does not know is asked about three times, then lost with one alert."""
    relay = start(make_relay, provider, capture)
    relay.cli("watch", "nobody-knows", check=True)
    wait_for(state_is(relay, "nobody-knows", "lost"))
    assert len(provider.polls("nobody-knows")) == 3
    alert_once_more(relay, capture, 1)
    assert sum("does not know task nobody-knows" in t for t in titles(capture)) == 1


def test_manual_poll_records_what_the_provider_says(make_relay: Any, provider: FakeProvider) -> None:
    """`relay poll` records the answer as a delivery with source poll, for a task not even watched."""
    relay = start(make_relay, provider)
    provider.script("by-hand", "midi", pa.midi("by-hand", 0), pa.success("midi", "by-hand"))
    first = relay.cli("poll", "by-hand", "--kind", "midi", check=True).stdout
    assert "PENDING -> running" in first
    second = relay.cli("poll", "by-hand", "--kind", "midi", check=True).stdout
    assert "SUCCESS -> done" in second
    docs = logged(relay, "by-hand")
    assert [(d["source"], d["ok"], d["task_state"]) for d in docs] == [("poll", None, None), ("poll", True, "complete")]
    assert docs[1]["details"]["instruments"] == ["Drums"]
    shown = json.loads(relay.cli("show", "by-hand", "--json", check=True).stdout)
    assert shown["watch"] is None
    assert relay.cli("show", "by-hand", check=True).stdout.splitlines()[1] == "not watched"
    page = httpx.get(f"{relay.admin}/tasks/by-hand").text
    assert 'class="badge watch"' not in page


def test_kind_in_the_callback_url_classifies_the_callback(make_relay: Any, provider: FakeProvider) -> None:
    """A failed WAV callback looks like nothing in particular: the `?kind=wav` relay submitted with decides."""
    relay = start(make_relay, provider, provider={"poll_after": 3600})
    task_id = relay.cli("submit", "wav", "--param", "taskId=m1", "--param", "audioId=a1", check=True).stdout.strip()
    path = provider.callback_path(task_id)
    assert path.endswith("?kind=wav")
    failed = {"code": 500, "msg": "wav failed", "data": {"task_id": task_id}}
    assert httpx.post(f"http://127.0.0.1:{relay.port}{path}", json=failed).status_code == 200
    doc = logged(relay, task_id)[-1]
    assert (doc["kind"], doc["ok"], doc["source"]) == ("wav", False, "callback")
    wait_for(state_is(relay, task_id, "failed"))
    page = httpx.get(f"{relay.admin}/tasks/{task_id}").text
    assert "watch: failed" in page


@pytest.mark.parametrize("level", ["info", "debug"])
def test_provider_key_in_no_output_log_or_file(make_relay: Any, provider: FakeProvider, level: str) -> None:
    """The key set in the config appears in no CLI output, no relay output and no state file."""
    relay = start(
        make_relay, provider, log={"level": level}, provider={"api_key": PROVIDER_KEY}, env={"RELAY_PROVIDER_KEY": ""}
    )
    provider.script("k1", "music", pa.success("music", "k1"))
    outputs = [relay.cli("submit", "lyrics", "--param", "prompt=x"), relay.cli("poll", "k1")]
    outputs.append(relay.cli("watch", "--list", "--json"))
    outputs.append(relay.cli("check"))
    assert "API key set (****)" in outputs[-1].stdout
    provider.key = "another-key-now"  # the next request is refused: the 401 message must not echo the key either
    outputs.append(relay.cli("poll", "k1"))
    assert outputs[-1].returncode == 1
    wait_for(lambda: len(relay.deliveries()) >= 1)
    texts = [o.stdout + o.stderr for o in outputs] + [relay.read_output()]
    texts += [p.read_text(errors="replace") for p in (relay.dir / "state").rglob("*") if p.is_file()]
    for text in texts:
        assert PROVIDER_KEY not in text
    assert provider.submits()[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"


HMAC_KEY = "hmac-test-key-123"


@pytest.mark.parametrize(
    ("age", "key", "status"),
    [(0, HMAC_KEY, 200), (0, "wrong-key", 401), (600, HMAC_KEY, 401), (None, HMAC_KEY, 401)],
    ids=["good", "bad", "stale", "unsigned"],
)
def test_signed_callbacks(make_relay: Any, age: int | None, key: str, status: int) -> None:
    """With provider.hmac_key, only a valid, fresh X-Webhook-Signature is recorded; others get 401 and are
    recorded as rejected with the reason."""
    relay = make_relay(provider={"hmac_key": HMAC_KEY})
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "signed", "data": []}}
    headers = {}
    if age is not None:
        stamp = str(int(time.time()) - age)
        headers = {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": signature.sign(key, "signed", stamp)}
    response = relay.post(body, headers=headers)
    assert response.status_code == status
    if status == 200:
        assert wait_for(relay.deliveries)[0]["task_id"] == "signed"
        return
    rejected = json.loads(relay.cli("log", "--rejected", "--json", check=True).stdout.splitlines()[0])
    assert rejected["status"] == 401
    assert "signature check failed" in rejected["reason"]
    assert read_all(relay.log_path) == []
    assert HMAC_KEY not in relay.read_output()


def test_poll_after_the_callback_alerts_nothing_more(
    make_relay: Any, provider: FakeProvider, capture: CaptureServer
) -> None:
    """The other way round: a callback alerted the result; a later poll finding it is a duplicate, no alert."""
    relay = start(make_relay, provider, capture)
    provider.script("called", "video", pa.success("video", "called"))
    body = {"code": 200, "msg": "success", "data": {"task_id": "called", "video_url": pa.VIDEO["videoUrl"]}}
    assert httpx.post(relay.callback_url + "?kind=video", json=body).status_code == 200
    wait_for(lambda: any("Music video ready" in t for t in titles(capture)))
    assert "SUCCESS -> done" in relay.cli("poll", "called", "--kind", "video", check=True).stdout
    polled = logged(relay, "called")[-1]
    assert (polled["source"], polled["duplicate"], polled["kind"]) == ("poll", True, "video")
    everything = alert_once_more(relay, capture, 1)
    assert sum("Music video ready" in t for t in everything) == 1


def test_requests_are_spaced_by_the_rate_limit_and_430_slows_them(make_relay: Any, provider: FakeProvider) -> None:
    """Six tasks due at once go out provider.rate_limit per second; when the provider still answers 430, relay
    waits and every task ends all the same."""
    relay = start(make_relay, provider, provider={"poll_after": 1, "rate_limit": 2})
    tasks = [f"r{n}" for n in range(6)]
    for task in tasks:  # through the API: the CLI's start-up would space them out by itself
        provider.script(task, "wav", pa.success("wav", task))
        watch = httpx.post(f"{relay.admin}/api/watch", json={"task_id": task, "kind": "wav"})
        assert watch.status_code == 200
    for task in tasks:
        wait_for(state_is(relay, task, "done"))
    times = sorted(r.at for r in provider.polls())
    assert len(times) == 6
    # 2 per second: six requests due at once span 2.5 s as sent; arrival can shift either end a little on a busy
    # machine, but not by a second (without the limit they would all arrive within milliseconds).
    assert times[-1] - times[0] > 2.0

    relay.stop()
    relay = start(make_relay, provider, provider={"poll_after": 0, "rate_limit": 20})
    provider.rate_limit = 1  # more than one request within a second gets code 430
    more = [f"s{n}" for n in range(3)]
    for task in more:
        provider.script(task, "wav", pa.success("wav", task))
        relay.cli("watch", task, "--kind", "wav", check=True)
    for task in more:
        wait_for(state_is(relay, task, "done"), timeout=120)
    assert "code 430" in relay.read_output()
