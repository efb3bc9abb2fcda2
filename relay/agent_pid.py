"""The ngrok agent relay started, remembered on disk, so an agent left behind by a killed relay can be ended.

pyngrok starts the agent in a session of its own and ends it when relay stops. A relay killed with SIGKILL (or by
the OOM killer) outside systemd cannot: the agent keeps its session open, and ngrok's free plan allows one, so
the next `relay serve` would be refused with ERR_NGROK_108. The pid file holds the agent's pid and its start
time, which together name one process: a pid reused by something else since then is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger("relay.tunnel")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None when it is gone or not ours to see."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent's wait() is missing
        return None
    return int(fields[19])


def record(pid_file: Path, pid: int) -> None:
    """Remember the agent just started."""
    started = _start_time(pid)
    if started is None:
        return
    with contextlib.suppress(OSError):  # losing this only loses the clean-up after a SIGKILL
        tmp = pid_file.with_name(pid_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": pid, "started": started}))
        tmp.replace(pid_file)


def forget(pid_file: Path) -> None:
    """The agent was stopped cleanly: nothing is left to end."""
    with contextlib.suppress(OSError):
        pid_file.unlink()


def end_leftover(pid_file: Path, grace: float = 5.0) -> int | None:
    """End the agent a previous relay left running, if it is still that same process; returns its pid."""
    try:
        known = json.loads(pid_file.read_text())
        pid, started = int(known["pid"]), int(known["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    forget(pid_file)
    if _start_time(pid) != started:
        return None
    logger.warning("ending the ngrok agent (pid %d) a previous relay left running", pid)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _start_time(pid) != started:
                return pid
            time.sleep(0.05)
    return pid
