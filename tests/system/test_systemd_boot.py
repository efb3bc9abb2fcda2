"""relay under a real systemd: the README's service steps, run as written in a booted Debian container.

Slow (one to three minutes, and more when debootstrap has to build the root) and root-only, so not in the quick suite:
`.venv/bin/python -m pytest -m systemd_boot` runs it, and `.ci/run` does as its own step. The tests run in order
on one container: the system unit first, then the user unit beside it.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import tomllib
from dataclasses import dataclass

import pytest

from tests.conftest import wait_for
from tests.family import music
from tests.system.conftest import REPORT, ROOT, timed
from tests.system.machine import REPO_INSIDE, Machine
from tests.system.readme_steps import SYSTEM, USER, Step, service_steps

pytestmark = [pytest.mark.systemd_boot, pytest.mark.timeout(1800)]

STEPS = service_steps((ROOT / "README.md").read_text())
PERSON = "alice"  # the README's <user>
PUBLIC_URL = "https://relay.example.test"
SYSTEM_CONFIG = "/etc/relay/config.toml"
USER_CONFIG = f"/home/{PERSON}/.config/relay/config.toml"
CREDENTIAL = "/run/credentials/relay.service/config.toml"


def as_run(step: Step) -> str:
    """A README line as the test runs it: placeholders filled in, ngrok swapped for a public URL, `-f` bounded."""
    command = step.command.replace("<this repository>", REPO_INSIDE).replace("<user>", PERSON)
    ngrok = re.fullmatch(r"echo 'NGROK_AUTHTOKEN=[^']*' >> (\S+)/secrets\.env", command)
    if ngrok:
        # Nothing but package registries can be reached from here, so no ngrok: the config names its public URL
        # instead (tunnel.provider = "none"), which `relay url` prints just as it would a tunnel's.
        setting = f'provider = "none"\\npublic_url = "{PUBLIC_URL}"'
        return f"sed -i 's|^provider = \"ngrok\".*|{setting}|' {ngrok[1]}/config.toml"
    return f"timeout 5 {command}" if step.follows else command  # exit 124: cut short, as a person would


@dataclass
class Ran:
    """What the README's steps printed, by command, and the token of the config they wrote."""

    outputs: dict[str, str]
    token: str
    port: int

    def output(self, fragment: str) -> str:
        """What the step whose command contains `fragment` printed."""
        return next(out for command, out in self.outputs.items() if fragment in command)


def run_steps(machine: Machine, steps: list[Step], config: str) -> Ran:
    """Run README steps in order (`#` as root, `$` as the user); each must succeed."""
    assert steps, "the README's service section has no such block"
    outputs = {}
    for step in steps:
        result = machine.run(as_run(step), user=None if step.as_root else PERSON, check=False)
        if result.returncode != 0 and not (step.follows and result.returncode == 124):
            journal = machine.run("journalctl -n 40 --no-pager", check=False).stdout
            pytest.fail(
                f"README step failed ({result.returncode}): {step.command}\n{result.stdout}\n{result.stderr}\n"
                f"the journal's last lines:\n{journal}"
            )
        outputs[step.command] = result.stdout + result.stderr
    settings = tomllib.loads(machine.path(config).read_text())
    return Ran(outputs, settings["server"]["token"], settings["server"]["port"])


def show(machine: Machine, *properties: str, user: bool = False) -> dict[str, str]:
    """`systemctl show relay` for the system unit, or the user's."""
    flags = " ".join(f"-p {p}" for p in properties)
    result = machine.run(f"systemctl {'--user ' if user else ''}show relay {flags}", user=PERSON if user else None)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def post(machine: Machine, port: int, token: str, task: str) -> tuple[int, str]:
    """POST a provider callback to the public listener from inside the container: (status, body)."""
    body = shlex.quote(json.dumps(music(task=task)))
    url = f"http://127.0.0.1:{port}/callback/{token}"
    out = machine.run(f"curl -sS -H 'Content-Type: application/json' -d {body} -w '\\n%{{http_code}}' {url}").stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


def exposure(machine: Machine, user: bool = False) -> float:
    """`systemd-analyze security relay`'s overall exposure, measured inside."""
    out = machine.run(f"systemd-analyze {'--user ' if user else ''}security relay", user=PERSON if user else None)
    score = re.search(r"Overall exposure level for relay\.service: ([\d.]+)", out.stdout)
    assert score, out.stdout
    return float(score[1])


@pytest.fixture(scope="module")
def system(machine: Machine) -> Ran:
    """The README's system-unit steps, run as root on the fresh machine."""
    with timed("README system steps"):
        return run_steps(machine, STEPS[SYSTEM], SYSTEM_CONFIG)


@pytest.fixture(scope="module")
def user(machine: Machine, system: Ran) -> Ran:
    """The README's user-unit steps, run by an ordinary user while the system unit keeps running."""
    machine.run(f"useradd --create-home --shell /bin/bash {PERSON}")
    # Test container only: nspawn puts a FIFO at /proc/kmsg, which a user manager cannot mask for
    # ProtectKernelLogs= (226/NAMESPACE). The unit keeps the setting; on a real machine it applies.
    dropin = "~/.config/systemd/user/relay.service.d"
    machine.run(f"mkdir -p {dropin} && printf '[Service]\\nProtectKernelLogs=no\\n' > {dropin}/nspawn.conf", PERSON)
    with timed("README user steps"):
        return run_steps(machine, STEPS[USER], USER_CONFIG)


def test_enable_now_reaches_running_through_ready(machine: Machine, system: Ran) -> None:
    """`systemctl enable --now relay` returns with the unit running: a Type=notify unit is so only after READY=1."""
    state = show(machine, "Type", "ActiveState", "SubState", "NRestarts", "StatusText", "UnitFileState")
    assert state["Type"] == "notify"
    assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0")
    assert state["UnitFileState"] == "enabled"
    assert state["StatusText"]  # sent with READY=1


def test_status_masks_the_token(machine: Machine, system: Ran) -> None:
    """STATUS= (and so `systemctl status`) shows the callback URL with the token masked, and the counts."""
    status = show(machine, "StatusText")["StatusText"]
    assert status.startswith(f"{PUBLIC_URL}/callback/****; 0 live deliveries; 0 alerts pending")
    assert f'Status: "{status}"' in system.output("systemctl status relay")
    assert system.token not in system.output("systemctl status relay")


def test_callback_is_recorded_and_read_by_relay_log_as_root(machine: Machine, system: Ran) -> None:
    """A callback to the public port is acknowledged, and the README's `relay log`, run as root, lists it."""
    assert system.output("relay url").strip() == f"{PUBLIC_URL}/callback/{system.token}"
    assert post(machine, system.port, system.token, "system-1") == (200, '{"status":"received"}')
    relay_log = next(s for s in STEPS[SYSTEM] if "relay log" in s.command)
    assert "system-1" in machine.run(as_run(relay_log)).stdout


def test_the_dynamic_user_owns_its_state(machine: Machine, system: Ran) -> None:
    """relay runs as a DynamicUser uid, which owns /var/lib/private/relay (mode 700) and the log in it."""
    pid = show(machine, "MainPID")["MainPID"]
    uid = int(machine.run(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status").stdout)
    assert 61184 <= uid <= 65519  # systemd's range for dynamic users
    owners = machine.run("stat -c '%u %a' /var/lib/private/relay /var/lib/private/relay/callbacks.json").stdout
    assert owners.split() == [str(uid), "700", str(uid), "600"]
    assert machine.run("readlink /var/lib/relay").stdout.strip() == "private/relay"


def test_the_config_arrives_as_a_credential(machine: Machine, system: Ran) -> None:
    """relay reads LoadCredential's copy; /etc/relay/config.toml stays root-only and /etc/relay read-only to it."""
    pid = show(machine, "MainPID")["MainPID"]
    assert f"--config {CREDENTIAL}" in machine.run(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert machine.run(f"stat -c '%a %U' {SYSTEM_CONFIG}").stdout.split() == ["600", "root"]
    in_unit = f"nsenter --target={pid} --mount"
    machine.run(f"{in_unit} test -s {CREDENTIAL}")
    assert machine.run(f"{in_unit} test -w /etc/relay", check=False).returncode != 0


def test_watchdog_restarts_a_stopped_relay_and_nothing_is_lost(machine: Machine, system: Ran) -> None:
    """SIGSTOP: the watchdog kills and restarts relay, and every acknowledged callback is still in the log.

    A test-only drop-in shortens WatchdogSec from 60 s to 5 s; relay pings at half of whatever systemd sets.
    """
    dropin = machine.path("/etc/systemd/system/relay.service.d/watchdog.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nWatchdogSec=5\n")
    try:
        machine.run("systemctl daemon-reload && systemctl restart relay")
        before = show(machine, "MainPID", "NRestarts", "WatchdogUSec")
        assert before["WatchdogUSec"] == "5s"
        time.sleep(7)  # longer than WatchdogSec: relay's pings reach systemd, so it lives on
        alive = show(machine, "MainPID", "NRestarts", "StatusText")
        assert (alive["MainPID"], alive["NRestarts"]) == (before["MainPID"], before["NRestarts"])
        assert "; 1 live delivery; 0 alerts pending" in alive["StatusText"]

        machine.run(f"kill -STOP {before['MainPID']}")
        with timed("watchdog wait (WatchdogSec=5)"):
            wait_for(lambda: show(machine, "MainPID", "ActiveState")["MainPID"] not in ("0", before["MainPID"]), 60)
            wait_for(lambda: show(machine, "ActiveState")["ActiveState"] == "active", 60)
        assert int(show(machine, "NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
        assert "Watchdog timeout" in machine.run("journalctl -u relay -o cat --no-pager").stdout
        assert post(machine, system.port, system.token, "system-2")[0] == 200
        logged = machine.run(f"/opt/relay/.venv/bin/relay log --json --config {SYSTEM_CONFIG}").stdout
        assert {"system-1", "system-2"} <= {json.loads(line)["task_id"] for line in logged.splitlines()}
    finally:
        dropin.unlink()
        machine.run("systemctl daemon-reload && systemctl restart relay")


def test_systemctl_stop_exits_0_within_seconds(machine: Machine, system: Ran) -> None:
    """`systemctl stop relay`: SIGTERM, a clean drain, exit 0 in well under TimeoutStopSec."""
    started = time.monotonic()
    machine.run("systemctl stop relay")
    took = time.monotonic() - started
    REPORT["systemctl stop (system unit)"] = f"{took:.1f} s"
    state = show(machine, "ActiveState", "Result", "ExecMainStatus")
    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == ("inactive", "success", "0")
    assert took < 10


def test_a_bad_config_exits_3_without_a_restart_loop(machine: Machine, system: Ran) -> None:
    """An unknown key: exit 3, a message naming /etc/relay/config.toml (not the credential copy), no restart."""
    config = machine.path(SYSTEM_CONFIG)
    good = config.read_text()
    try:
        config.write_text(good + "\n[bogus]\nkey = 1\n")
        assert machine.run("systemctl start relay", check=False).returncode != 0
        state = show(machine, "ExecMainStatus", "Result", "SubState", "NRestarts")
        # A restart to come would show as SubState=auto-restart; RestartPreventExitStatus=3 makes it final.
        assert (state["ExecMainStatus"], state["Result"], state["SubState"]) == ("3", "exit-code", "failed")
        assert state["NRestarts"] == "0"
        journal = machine.run("journalctl -u relay -o cat --no-pager").stdout
        assert f"{SYSTEM_CONFIG}: bogus: unknown key" in journal
        assert f"{CREDENTIAL}:" not in journal
    finally:
        config.write_text(good)
        machine.run("systemctl reset-failed relay; systemctl start relay")


def test_system_unit_exposure_inside(machine: Machine, system: Ran) -> None:
    """`systemd-analyze security relay` on the booted system: at most 1.5."""
    score = exposure(machine)
    REPORT["exposure relay.service"] = str(score)
    assert score <= 1.5


def test_user_unit_starts_beside_the_system_unit(machine: Machine, user: Ran) -> None:
    """As an ordinary user with linger: the user unit reaches running through READY, on its own ports."""
    state = show(machine, "ActiveState", "SubState", "NRestarts", "StatusText", user=True)
    assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0")
    assert state["StatusText"].startswith(f"{PUBLIC_URL}/callback/****; ")
    assert show(machine, "ActiveState")["ActiveState"] == "active"  # the system unit, on 8080
    assert user.port == 8090
    assert user.token not in user.output("systemctl --user status relay")
    assert "relay: admin page: http://127.0.0.1:8091/" in user.output("journalctl --user")


def test_user_unit_records_a_callback(machine: Machine, user: Ran) -> None:
    """A callback to the user unit's public port lands in the user's log."""
    assert post(machine, user.port, user.token, "user-1")[0] == 200
    logged = machine.run(f"~/relay/.venv/bin/relay log --json --config {USER_CONFIG}", user=PERSON).stdout
    assert "user-1" in {json.loads(line)["task_id"] for line in logged.splitlines()}


def test_user_unit_hardening_takes_effect(machine: Machine, user: Ran) -> None:
    """PrivateUsers=yes makes ProtectSystem=strict real: the OS is read-only in relay's mount namespace."""
    pid = show(machine, "MainPID", user=True)["MainPID"]
    in_unit = f"nsenter --target={pid} --mount"  # root, so only a read-only mount stops it writing
    for path in ("/etc", "/usr", "/var"):
        assert machine.run(f"{in_unit} test -w {path}", check=False).returncode != 0, f"{path} is writable"
    machine.run(f"{in_unit} test -w /home/{PERSON}/.local/state/relay")
    score = exposure(machine, user=True)
    REPORT["exposure relay-user.service"] = f"{score} (with the nspawn drop-in)"
    assert score <= 1.9


def test_user_unit_stops_cleanly(machine: Machine, user: Ran) -> None:
    """`systemctl --user stop relay`: exit 0 within seconds."""
    started = time.monotonic()
    machine.run("systemctl --user stop relay", user=PERSON)
    took = time.monotonic() - started
    REPORT["systemctl stop (user unit)"] = f"{took:.1f} s"
    state = show(machine, "ActiveState", "Result", "ExecMainStatus", user=True)
    assert (state["ActiveState"], state["Result"], state["ExecMainStatus"]) == ("inactive", "success", "0")
    assert took < 10


def test_no_journal_line_holds_a_token(machine: Machine, system: Ran, user: Ran) -> None:
    """Neither token is anywhere in the journal (every field of every entry, both units' and all else)."""
    journal = machine.run("journalctl -o verbose --no-pager").stdout
    assert f"{PUBLIC_URL}/callback/****" in journal  # relay did log its callback URL, masked
    assert system.token not in journal
    assert user.token not in journal
    assert system.token not in system.output("journalctl -u relay -f")
