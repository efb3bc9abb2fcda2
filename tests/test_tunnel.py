"""The ngrok tunnel through pyngrok, against a fake agent that forwards on loopback (no ngrok cloud)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fake_ngrok
from tests.conftest import TOKEN, CaptureServer, wait_for
from tests.family import music


@pytest.fixture
def agent(tmp_path: Path) -> dict[str, str]:
    """tunnel settings pointing pyngrok at the fake agent."""
    return fake_ngrok.tunnel_settings(tmp_path)


def state(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "fake.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_callback_through_the_tunnel(make_relay: Any, agent: dict[str, str], tmp_path: Path) -> None:
    """`relay url` gives the tunnel's URL; a POST through it is recorded with the public host; admin is unreachable."""
    relay = make_relay(tunnel=agent, env={"FAKE_NGROK_STATE": str(tmp_path / "fake.json")})
    url = relay.cli("url", check=True).stdout.strip()
    assert url == f"{state(tmp_path)['public_url']}/callback/{TOKEN}"
    assert httpx.post(url, json=music(task="tun")).status_code == 200
    doc = wait_for(relay.deliveries)[0]
    assert doc["task_id"] == "tun"
    base = state(tmp_path)["public_url"]
    for path in ("/", "/healthz", "/metrics", "/api/url", "/api/callbacks"):
        assert httpx.get(base + path, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 404
    assert "good-token-123" not in relay.read_output()


def test_killed_agent_is_restored_and_url_change_alerts(
    make_relay: Any, agent: dict[str, str], tmp_path: Path, capture: CaptureServer
) -> None:
    """The agent killed: relay restarts it, gets a new URL, and an alert says the URL changed."""
    relay = make_relay(
        tunnel=agent,
        env={"FAKE_NGROK_STATE": str(tmp_path / "fake.json")},
        notify={"urls": [f"json://127.0.0.1:{capture.port}/"]},
    )
    first = state(tmp_path)
    os.kill(first["pid"], 9)
    wait_for(lambda: state(tmp_path)["pid"] != first["pid"], timeout=60)
    new_url = wait_for(lambda: (u := relay.cli("url").stdout.strip()) and first["public_url"] not in u and u)
    assert httpx.post(new_url, json=music(task="after")).status_code == 200
    body = wait_for(lambda: [b for b in capture.json_bodies() if "URL changed" in b["title"]], timeout=60)[0]
    assert state(tmp_path)["public_url"] in body["message"]
    pid = state(tmp_path)["pid"]
    assert relay.stop() == 0
    wait_for(lambda: not alive(pid), timeout=30)


def test_static_domain_survives_restart(make_relay: Any, agent: dict[str, str], tmp_path: Path) -> None:
    """With tunnel.domain the callback URL is the same after a restart, and no agent is left after stop."""
    relay = make_relay(
        tunnel={**agent, "domain": "relay-home.ngrok.app"}, env={"FAKE_NGROK_STATE": str(tmp_path / "fake.json")}
    )
    expected = f"https://relay-home.ngrok.app/callback/{TOKEN}"
    assert relay.cli("url", check=True).stdout.strip() == expected
    pid = state(tmp_path)["pid"]
    assert relay.stop() == 0
    wait_for(lambda: not alive(pid), timeout=30)
    relay.start()
    assert relay.cli("url", check=True).stdout.strip() == expected
    port = state(tmp_path)["proxy_port"]
    response = httpx.post(f"http://127.0.0.1:{port}/callback/{TOKEN}", json=music(task="static"))
    assert response.status_code == 200
    assert wait_for(relay.deliveries)[-1]["public_host"] == "relay-home.ngrok.app"


def test_auth_failure_is_one_line_and_exit_3(make_relay: Any, agent: dict[str, str]) -> None:
    """An authtoken ngrok refuses stops relay with one clear line naming what to fix, exit 3."""
    relay = make_relay(start=False, tunnel={**agent, "authtoken": "bad-token"})
    relay.start(wait=False)
    assert relay.proc is not None
    assert relay.proc.wait(60) == 3
    output = relay.read_output()
    assert "NGROK_AUTHTOKEN" in output
    assert "Traceback" not in output


def test_agent_left_by_a_killed_relay_is_ended_on_restart(
    make_relay: Any, agent: dict[str, str], tmp_path: Path
) -> None:
    """relay killed with SIGKILL leaves its agent online; the next start ends it instead of being refused."""
    relay = make_relay(tunnel=agent, env={"FAKE_NGROK_STATE": str(tmp_path / "fake.json")})
    orphan = state(tmp_path)["pid"]
    relay.stop(signal.SIGKILL)
    assert alive(orphan)  # what ngrok's one-session limit would refuse the next agent for
    relay.start()
    wait_for(lambda: not alive(orphan), timeout=30)
    url = relay.cli("url", check=True).stdout.strip()
    assert httpx.post(url, json=music(task="again")).status_code == 200
    assert "left running" in relay.read_output()
    assert relay.stop() == 0
    assert not (tmp_path / "state" / "ngrok.pid").exists()


@pytest.fixture
def other() -> Iterator[subprocess.Popen[bytes]]:
    """A process relay did not start, ended after the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc
    proc.kill()
    proc.wait()


def test_another_agent_online_is_one_clear_line(
    make_relay: Any, agent: dict[str, str], tmp_path: Path, other: subprocess.Popen[bytes]
) -> None:
    """An agent relay did not start holds the account's one session: relay says so, and leaves that agent alone."""
    (tmp_path / "fake.json").write_text(json.dumps({"pid": other.pid}))
    relay = make_relay(start=False, tunnel=agent, env={"FAKE_NGROK_STATE": str(tmp_path / "fake.json")})
    relay.start(wait=False)
    assert relay.proc is not None
    assert relay.proc.wait(60) != 0
    output = relay.read_output()
    assert "another ngrok agent is already online" in output
    assert "ERR_NGROK_108" in output
    assert "Traceback" not in output
    assert other.poll() is None


def test_a_reused_pid_is_never_signalled(tmp_path: Path, other: subprocess.Popen[bytes]) -> None:
    """The pid file names a process by pid and start time: another process with that pid is left alone."""
    from relay import agent_pid

    pid_file = tmp_path / "ngrok.pid"
    agent_pid.record(pid_file, other.pid)
    started = json.loads(pid_file.read_text())["started"]
    pid_file.write_text(json.dumps({"pid": other.pid, "started": started - 1}))
    assert agent_pid.end_leftover(pid_file) is None
    assert other.poll() is None
    assert not pid_file.exists()
    agent_pid.record(pid_file, other.pid)
    assert agent_pid.end_leftover(pid_file) == other.pid
    assert other.wait(30) == -signal.SIGTERM
