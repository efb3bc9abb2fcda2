"""Running as a service: systemd unit checks, notify protocol, SIGTERM drain, kill -9 safety, metrics."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fake_ngrok
from tests.conftest import TOKEN, RelayProcess, free_port, wait_for, write_config
from tests.family import music

ROOT = Path(__file__).resolve().parent.parent


def keep_sending(relay: RelayProcess, prefix: str, stop: threading.Event, acked: list[str]) -> None:
    """Post distinct callbacks until `stop` or a connection error, noting each task acknowledged with 200."""
    i = 0
    while not stop.is_set():
        task = f"{prefix}-{i}"
        try:
            if relay.post(music(task=task)).status_code == 200:
                acked.append(task)
        except httpx.HTTPError:
            return
        i += 1


@pytest.mark.parametrize("unit", ["relay.service", "relay-user.service"])
def test_units_verify_and_are_hardened(unit: str, tmp_path: Path) -> None:
    """systemd-analyze verify passes; the system unit's security exposure is at most 1.5."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd; .ci/run installs it)"
    text = (ROOT / "systemd" / unit).read_text()
    relay_bin = str(Path(sys.executable).parent / "relay")
    text = "\n".join(
        line.replace(line.split()[0].split("=", 1)[1], relay_bin) if line.startswith("ExecStart=") else line
        for line in text.splitlines()
    )
    copy = tmp_path / "relay.service"
    copy.write_text(text)
    verify = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True)
    score = float(security.stdout.split("Overall exposure level for relay.service:")[1].split()[0])
    # The user unit cannot use DynamicUser; the system unit is the one held to the 1.5 target.
    assert score <= (1.5 if unit == "relay.service" else 1.9)
    assert "RestartPreventExitStatus=3" in text
    assert "Type=notify" in text
    # A user manager can drop capabilities and apply ProtectSystem= only inside a user namespace
    # (218/CAPABILITIES otherwise, found by tests/system); allowing every address needs no line at all.
    assert "PrivateUsers=yes" in text
    settings = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
    assert "IPAddressAllow" not in settings
    assert "ConfigurationDirectory" not in settings  # it would make /etc/relay writable inside the unit
    assert re.search(r"^LimitNOFILE=\d+$", text, re.M)  # the default soft limit of 1024 is a flood's first target


def test_config_errors_name_the_file_behind_the_credential(tmp_path: Path) -> None:
    """Read through LoadCredential's copy, a bad config's message names RELAY_CONFIG_SOURCE, the file one edits."""
    from relay.config import load_settings
    from relay.errors import ConfigError

    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "config.toml").write_text("[server]\nbogus = 1\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), "RELAY_CONFIG_SOURCE": "/etc/relay/config.toml"}
    with pytest.raises(ConfigError, match=r"^/etc/relay/config.toml: server.bogus: unknown key"):
        load_settings(str(creds / "config.toml"), env)
    other = tmp_path / "other.toml"  # not a credential: named as given
    other.write_text("[server]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=rf"^{other}: server.bogus"):
        load_settings(str(other), env)


def test_notify_protocol_ready_status_watchdog(make_relay: Any, tmp_path: Path) -> None:
    """READY=1 once listening, STATUS= with masked URL and counts, WATCHDOG=1 from the loop, STOPPING=1 on SIGTERM."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    relay = make_relay(start=False, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    relay.start()
    seen: list[str] = []
    while not any("WATCHDOG=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=https://relay.example.test/callback/****; 0 live deliveries; 0 alerts pending" in ready
    relay.post(music())
    while not any("1 live delivery;" in m for m in seen):  # singular, as `systemctl status` shows it
        seen.append(sock.recv(4096).decode())
    assert "test-token" not in "".join(seen)
    assert relay.stop() == 0
    while not any("STOPPING=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    sock.close()


def test_sigterm_under_load_loses_nothing(make_relay: Any) -> None:
    """SIGTERM while senders are busy: every acknowledged callback is recorded and the exit code is 0."""
    relay = make_relay()
    acked: list[str] = []
    stop = threading.Event()

    threads = [threading.Thread(target=keep_sending, args=(relay, f"s{n}", stop, acked)) for n in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) > 50)
    assert relay.stop(signal.SIGTERM) == 0
    stop.set()
    for t in threads:
        t.join()
    recorded = {d["task_id"] for d in relay.deliveries()}
    assert set(acked) <= recorded


def test_kill_9_loses_no_acknowledged_callback(make_relay: Any) -> None:
    """Repeated kill -9 under concurrent senders: every file parses after every kill and holds every ack."""
    relay = make_relay(storage={"rotate_records": 50})
    acked: list[str] = []
    for cycle in range(8):
        stop = threading.Event()

        threads = [threading.Thread(target=keep_sending, args=(relay, f"k{cycle}-{n}", stop, acked)) for n in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda cycle=cycle: sum(a.startswith(f"k{cycle}-") for a in acked) > 20)
        relay.stop(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join()
        for path in relay.log_path.parent.glob("*.json"):
            json.loads(path.read_text())  # parses after every kill
        relay.start()
    out = relay.cli("log", "--json", check=True).stdout
    recorded = {json.loads(line)["task_id"] for line in out.splitlines()}
    assert set(acked) <= recorded
    assert list(relay.log_path.parent.glob("callbacks-archive-callbacks-*.json"))


def test_metrics_after_traffic(relay_with_traffic: RelayProcess) -> None:
    """/metrics exposes deliveries by kind/stage/outcome, rejections, latency, outbox and log gauges."""
    text = httpx.get(f"{relay_with_traffic.admin}/metrics").text
    for name in (
        'relay_deliveries_total{kind="music",outcome="ok",stage="complete"} 2.0',
        "relay_duplicates_total 1.0",
        'relay_rejected_requests_total{reason="bad_json"} 1.0',
        "relay_ack_latency_seconds_bucket",
        "relay_outbox_depth",
        "relay_dead_alerts",
        "relay_tunnel_up",
        "relay_log_bytes",
    ):
        assert name in text


@pytest.fixture
def relay_with_traffic(make_relay: Any) -> RelayProcess:
    """A relay that received two callbacks (one a duplicate) and one bad body."""
    relay = make_relay()
    relay.post(music())
    relay.post(music())
    relay.post(b"nope")
    return relay


@pytest.mark.parametrize("level", ["info", "debug"])
def test_token_never_in_output_or_logs(make_relay: Any, level: str) -> None:
    """The token appears in neither `relay serve`'s output nor its logs (access log included)."""
    relay = make_relay(log={"level": level})
    relay.post(music())
    httpx.post(relay.callback_url.replace("callback/", "callback/x"), json={})
    relay.stop()
    output = relay.read_output()
    assert '"POST /callback/**** HTTP/1.1" 200' in output  # the access log, path redacted
    assert '"POST /callback/**** HTTP/1.1" 404' in output
    assert "test-token-0123456789abcdef" not in output


def test_relay_url_prints_it_whole(make_relay: Any) -> None:
    """`relay url` prints the full callback URL from the running instance; none running is an error."""
    relay = make_relay()
    result = relay.cli("url", check=True)
    assert result.stdout.strip() == "https://relay.example.test/callback/test-token-0123456789abcdef"
    relay.stop()
    stopped = relay.cli("url")
    assert stopped.returncode != 0
    assert "no relay is running" in stopped.stderr


def write_archive(log_path: Path, first: int, count: int, received_at: str) -> Path:
    """An archive file as rotation leaves it, holding `count` deliveries received at `received_at`."""
    docs = {
        str(i): {**music(task=f"a{i}"), "id": i, "task_id": f"a{i}", "received_at": received_at}
        for i in range(first, first + count)
    }
    last = first + count - 1
    path = log_path.with_name(f"{log_path.stem}-archive-callbacks-{first:09d}-{last:09d}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"callbacks": docs}))
    return path


def test_retention_prunes_old_archives_at_start_and_by_command(make_relay: Any) -> None:
    """storage.retention_days deletes expired archives at start; `relay prune --older-than` on demand."""
    relay = make_relay(start=False, storage={"retention_days": 30})
    now = datetime.now(UTC)
    ancient = write_archive(relay.log_path, 1, 5, (now - timedelta(days=400)).isoformat())
    older = write_archive(relay.log_path, 6, 5, (now - timedelta(days=10)).isoformat())
    recent = write_archive(relay.log_path, 11, 5, now.isoformat())
    relay.start()
    assert not ancient.exists()
    assert older.exists()
    assert recent.exists()
    assert relay.post(music(task="live")).status_code == 200
    shown = {json.loads(line)["task_id"] for line in relay.cli("log", "--json", check=True).stdout.splitlines()}
    assert shown == {f"a{i}" for i in range(6, 16)} | {"live"}

    out = relay.cli("prune", "--older-than", "5d", check=True).stdout
    assert older.name in out
    assert "1 archive file removed" in out
    assert not older.exists()
    assert recent.exists()


def test_disk_full_gives_503_and_unhealthy_then_recovers(make_relay: Any, tmp_path: Path) -> None:
    """A log that cannot be written: senders get 503 (they retry), /healthz says why, and both recover."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs to mount a small tmpfs (root): {mounted.stderr.decode().strip()}")
    try:
        relay = make_relay(storage={"state_dir": str(disk), "path": str(disk / "callbacks.json")})
        assert relay.post(music(task="before")).status_code == 200
        with (disk / "filler").open("wb", buffering=0) as filler:
            for chunk in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * chunk)
        # What still fits in the journal's last page is on disk and may be acknowledged; then 503s come.
        acked = ["before"]
        for i in range(50):
            response = relay.post(music(task=f"during-{i}"))
            if response.status_code != 200:
                break
            acked.append(f"during-{i}")
        assert response.status_code == 503
        assert "retry" in response.json()["error"]
        health = httpx.get(f"{relay.admin}/healthz", timeout=10)
        assert health.status_code == 503
        assert any("No space left" in p for p in health.json()["problems"])

        (disk / "filler").unlink()
        assert relay.post(music(task="after")).status_code == 200
        wait_for(lambda: httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 200)
        assert relay.stop() == 0
        tasks = {json.loads(line)["task_id"] for line in relay.cli("log", "--json", check=True).stdout.splitlines()}
        assert {*acked, "after"} <= tasks
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted for the test (skipped when mounting needs root it does not have)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs to mount a small tmpfs (root): {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; returns the file that holds the space."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    return filler


def post_until_refused(relay: RelayProcess, prefix: str, acked: list[str]) -> httpx.Response:
    """Post until a callback is refused (what still fits in the journal's last page may be acknowledged)."""
    for i in range(200):
        response = relay.post(music(task=f"{prefix}-{i}"))
        if response.status_code != 200:
            return response
        acked.append(f"{prefix}-{i}")
    raise AssertionError("the full disk never refused a callback")


def test_full_disk_stop_restart_and_recovery_need_no_help(make_relay: Any, tmp_path: Path) -> None:
    """On a full disk: no temp file keeps the space, SIGTERM exits 0, a restart starts (and answers 503), and once
    space returns /healthz is 200 again within seconds, without waiting for a callback."""
    with small_disk(tmp_path) as disk:
        relay = make_relay(storage={"state_dir": str(disk), "path": str(disk / "callbacks.json")})
        acked: list[str] = []
        for i in range(20):  # enough that a snapshot (and its temp file) needs real room
            assert relay.post(music(task=f"before-{i}")).status_code == 200
            acked.append(f"before-{i}")
        filler = fill(disk)
        assert post_until_refused(relay, "during", acked).status_code == 503
        wait_for(lambda: httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 503)
        wait_for(lambda: not list(disk.glob(".*.tmp")), timeout=10)  # a failed snapshot takes its temp file away

        assert relay.stop() == 0, relay.read_output()
        assert "Traceback" not in relay.read_output()

        relay.start()  # the disk is still full: relay starts anyway, and refuses what it cannot record
        assert httpx.get(f"{relay.admin}/healthz", timeout=10).status_code in (200, 503)
        assert post_until_refused(relay, "restarted", acked).status_code == 503
        assert httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 503

        filler.unlink()
        wait_for(lambda: httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 200, timeout=30)
        assert relay.post(music(task="after")).status_code == 200
        assert relay.stop() == 0
        assert "Traceback" not in relay.read_output()
        tasks = {json.loads(line)["task_id"] for line in relay.cli("log", "--json", check=True).stdout.splitlines()}
        assert {*acked, "after"} <= tasks


def test_runs_in_the_environment_the_units_give_it(tmp_path: Path) -> None:
    """What systemd/relay.service gives relay, without systemd: $STATE_DIRECTORY, the config as a credential,
    the authtoken from the EnvironmentFile, and a $HOME nothing can be written under (pyngrok's default)."""
    state, creds = tmp_path / "state", tmp_path / "credentials"
    state.mkdir(mode=0o700)
    creds.mkdir(mode=0o700)
    fake_ngrok.install(state / "ngrok")  # where pyngrok would download it under systemd
    port, admin = free_port(), free_port()
    config = write_config(
        creds,
        {
            "server": {"port": port, "token": TOKEN},
            "admin": {"port": admin},
            "tunnel": {"provider": "ngrok", "check_interval": 0.5},
            "archive": {"enabled": False},  # the callback below links to internet hosts; tests stay on loopback
        },
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/dev/null",  # not a folder: nothing can be created under it, even by root
        "STATE_DIRECTORY": str(state),
        "NGROK_AUTHTOKEN": "good-token-123",
        "FAKE_NGROK_STATE": str(state / "fake.json"),
        "NO_PROXY": "*",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: _health(admin).get("tunnel", {}).get("state") == "up" or proc.poll() is not None)
        assert proc.poll() is None
        public = json.loads((state / "fake.json").read_text())["public_url"]
        assert httpx.post(f"{public}/callback/{TOKEN}", json=music(task="unit")).status_code == 200
        assert (state / "ngrok.yml").exists()
        assert _health(admin)["log"]["path"] == str(state / "callbacks.json")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "good-token-123" not in out
    assert TOKEN not in out


def _health(admin: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return {}


def test_readme_service_steps_are_what_the_boot_test_runs() -> None:
    """The README's two service blocks parse into the steps tests/system runs (a renamed heading would run none)."""
    from tests.system.readme_steps import SYSTEM, USER, service_steps

    steps = service_steps((ROOT / "README.md").read_text())
    assert [s.command for s in steps[SYSTEM] if not s.as_root] == []
    assert any(s.command == "systemctl enable --now relay" for s in steps[SYSTEM])
    assert any(s.command.startswith("loginctl enable-linger") and s.as_root for s in steps[USER])
    linger = next(i for i, s in enumerate(steps[USER]) if "enable-linger" in s.command)
    start = next(i for i, s in enumerate(steps[USER]) if "systemctl --user" in s.command and "--now" in s.command)
    assert linger < start  # without linger first the user's systemd ends with the su session that started relay
