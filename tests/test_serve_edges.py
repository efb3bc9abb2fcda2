"""`relay serve` where a new user first trips: a second instance, a fixed public URL, oversized and stalled bodies."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import httpx

from tests.conftest import TOKEN, wait_for


def test_a_second_serve_names_the_relay_that_owns_the_log(make_relay: Any) -> None:
    """Same config twice: the second says another relay writes the log (not 'Address already in use'), exit 1;
    the first logs uvicorn's 'Started/Finished server process' once each, not once per listener."""
    relay = make_relay()
    second = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(relay.config_path)],
        capture_output=True,
        text=True,
        env=relay.env,
        cwd=relay.dir,
        timeout=120,
    )
    assert second.returncode == 1
    assert "another relay process is writing" in second.stderr
    assert "Address already in use" not in second.stderr
    assert relay.stop() == 0
    output = relay.read_output()
    assert output.count("Started server process") == 1
    assert output.count("Finished server process") == 1


def test_a_fixed_public_url_counts_as_up(make_relay: Any) -> None:
    """provider "none" with public_url: relay_tunnel_up is 1 and /healthz says the tunnel is up; they agree."""
    relay = make_relay()
    assert "relay_tunnel_up 1.0" in httpx.get(f"{relay.admin}/metrics").text
    health = httpx.get(f"{relay.admin}/healthz")
    assert health.status_code == 200
    assert health.json()["tunnel"]["state"] == "up"


def test_no_public_url_at_all(make_relay: Any) -> None:
    """provider "none" without public_url: no tunnel series (no rule fires forever), /healthz ok, and serve,
    check and `relay url` give the same reason, `relay url` pointing at `relay url --local`."""
    relay = make_relay(tunnel={"provider": "none", "public_url": ""})
    assert "relay_tunnel_up" not in httpx.get(f"{relay.admin}/metrics").text
    assert httpx.get(f"{relay.admin}/healthz").status_code == 200
    reason = 'tunnel.provider is "none" and tunnel.public_url is empty'
    assert f"relay: no public callback URL: {reason}" in relay.read_output()
    assert reason in relay.cli("check", check=True).stdout
    url = relay.cli("url")
    assert url.returncode == 1
    assert reason in url.stderr
    assert "`relay url --local`" in url.stderr
    assert relay.cli("url", "--local", check=True).stdout.strip() == relay.callback_url


def test_rejected_rows_show_the_size_declared_or_received(make_relay: Any) -> None:
    """A 413 refused by its Content-Length shows the size it declared; a stalled 408 the bytes that arrived."""
    relay = make_relay(server={"max_body_bytes": 2048, "body_timeout": 1})
    big = httpx.post(relay.callback_url, content=b"x" * 5000, timeout=30)
    assert big.status_code == 413
    stalled = socket.create_connection(("127.0.0.1", relay.port))
    head = f"POST /callback/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    stalled.sendall(head.encode() + b'{"code": 200, "pad": "' + b"y" * 100)
    try:
        assert b" 408 " in stalled.recv(4096)
    finally:
        stalled.close()
    docs = wait_for(lambda: (out := relay.cli("log", "--rejected", "--json").stdout).count("\n") == 2 and out)
    too_large, timed_out = (json.loads(line) for line in docs.splitlines())
    assert (too_large["size"], too_large["declared"]) == (5000, 5000)
    assert (timed_out["received"], timed_out["declared"]) == (122, 1000)
    table = relay.cli("log", "--rejected", check=True).stdout
    assert "5000 declared" in table
    assert "1000 declared" in table
    assert " 0 " not in table
