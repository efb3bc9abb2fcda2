"""Exec forward targets in-process, with real child processes: stdin, environment, exit codes, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.config import ForwardTarget
from relay.forward import command
from relay.ingest import delivery_doc
from relay.jobs import Attempt
from tests.conftest import wait_for
from tests.family import music


def script(tmp_path: Path, body: str) -> list[str]:
    """An argument list running a small Python script."""
    path = tmp_path / "hook.py"
    path.write_text("import json, os, sys, time\n" + body)
    return [sys.executable, str(path)]


def run(argv: list[str], timeout: float = 30.0, files: tuple[str, ...] = (), replay: bool = False) -> Attempt:
    """One attempt of an exec target running `argv` on a recorded music delivery."""
    target = ForwardTarget(name="hook", exec=tuple(argv), timeout=timeout)
    delivery = {**delivery_doc(music(task="t\0x"), "2026-01-01T00:00:00.000Z", 10, None), "id": 5}
    return asyncio.run(command.run(target, delivery, list(files), replay))


def test_command_gets_the_delivery_on_stdin_and_facts_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdin is the delivery JSON; RELAY_* variables name it; relay's own secrets are not inherited."""
    monkeypatch.setenv("RELAY_TOKEN", "do-not-leak-0123456789")
    monkeypatch.setenv("NGROK_AUTHTOKEN", "do-not-leak-either")
    out = tmp_path / "out.json"
    argv = script(
        tmp_path,
        f"json.dump({{'stdin': json.load(sys.stdin), 'env': dict(os.environ)}}, open({str(out)!r}, 'w'))\n",
    )
    result = run(argv, files=("/music/a.mp3", "/music/a.jpg"), replay=True)
    assert result.ok, result.error
    assert result.result is not None
    assert result.result["exit_code"] == 0
    seen: dict[str, Any] = json.loads(out.read_text())
    assert seen["stdin"]["id"] == 5
    assert seen["stdin"]["tracks"][0]["title"] == "Iron Man"
    env = seen["env"]
    assert env["RELAY_TASK_ID"] == "tx"  # a NUL from the payload cannot reach execve
    assert (env["RELAY_STAGE"], env["RELAY_KIND"], env["RELAY_DELIVERY_ID"], env["RELAY_OK"]) == (
        "complete",
        "music",
        "5",
        "true",
    )
    assert env["RELAY_FILES"].splitlines() == ["/music/a.mp3", "/music/a.jpg"]
    assert env["RELAY_REPLAY"] == "1"
    assert "RELAY_TOKEN" not in env
    assert "NGROK_AUTHTOKEN" not in env
    assert env["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize(
    ("body", "ok", "retry", "code", "error"),
    [
        ("sys.exit(0)", True, True, 0, None),
        ("sys.stderr.write('disk full\\n'); sys.exit(75)", False, True, 75, "exit code 75: disk full"),
        ("sys.stderr.write('x' * 100000 + '\\nbad tag\\n'); sys.exit(2)", False, False, 2, "exit code 2: bad tag"),
        ("sys.stdout.write('y' * 1000000)", True, True, 0, None),
    ],
    ids=["success", "tempfail-is-retried", "other-exit-gives-up", "chatty-stdout"],
)
def test_exit_codes(tmp_path: Path, body: str, ok: bool, retry: bool, code: int, error: str | None) -> None:
    """Exit 0 is done, 75 (EX_TEMPFAIL) is retried, others give up; stderr's tail is kept, bounded."""
    result = run(script(tmp_path, body))
    assert (result.ok, result.retry, result.error) == (ok, retry, error)
    assert result.result is not None
    assert result.result["exit_code"] == code
    assert len(result.result["stderr"]) <= command.STDERR_TAIL


def test_timeout_ends_the_command_and_its_children(tmp_path: Path) -> None:
    """A command past its timeout is ended with its process group, and the attempt is retried later."""
    pid_file = tmp_path / "child.pid"
    argv = script(
        tmp_path,
        "import subprocess\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "sys.stderr.write('working\\n'); sys.stderr.flush(); time.sleep(600)\n",
    )
    result = run(argv, timeout=3.0)
    assert (result.ok, result.retry) == (False, True)
    assert result.error == "timed out after 3 s"
    assert result.result is not None
    assert result.result["stderr"] == "working"
    child = int(pid_file.read_text())
    wait_for(lambda: not alive(child))


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_missing_program_is_retried_with_a_reason(tmp_path: Path) -> None:
    """A command that cannot be started is a failure to retry (it may be installed later), with the reason."""
    result = run([str(tmp_path / "not-there")])
    assert (result.ok, result.retry) == (False, True)
    assert result.error is not None
    assert "No such file" in result.error
