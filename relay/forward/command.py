"""One exec forward attempt: run a command (an argument list, never a shell) with the delivery on stdin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from relay.config import ForwardTarget
from relay.jobs import Attempt

#: Bytes of stderr kept on the job's entry.
STDERR_TAIL = 2000
#: sysexits' EX_TEMPFAIL: the command asks to be run again later.
TEMPFAIL = 75
#: What a command inherits from relay's environment; relay's own secrets (RELAY_TOKEN, NGROK_AUTHTOKEN, the
#: provider key) are not handed to a script. Use `exec = ["env", "NAME=value", ...]` for more.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def environment(delivery: Mapping[str, Any], files: Sequence[str], replay: bool) -> dict[str, str]:
    """The command's environment: a few inherited variables and what relay knows of the delivery."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(
        RELAY_TASK_ID=_env_text(delivery.get("task_id")),
        RELAY_STAGE=_env_text(delivery.get("stage")),
        RELAY_KIND=_env_text(delivery.get("kind")),
        RELAY_OK={True: "true", False: "false"}.get(delivery.get("ok"), ""),  # type: ignore[arg-type]
        RELAY_DELIVERY_ID=_env_text(delivery.get("id")),
        RELAY_SOURCE=_env_text(delivery.get("source") or "callback"),
        RELAY_FILES="\n".join(_env_text(path) for path in files),
    )
    if replay:
        env["RELAY_REPLAY"] = "1"
    return env


def _env_text(value: Any) -> str:
    # A task id is whatever the sender wrote: no NUL, nothing that is not UTF-8 may reach execve.
    text = "" if value is None else str(value)
    return text.encode("utf-8", "replace").decode("utf-8").replace("\0", "")


async def run(target: ForwardTarget, delivery: Mapping[str, Any], files: Sequence[str], replay: bool) -> Attempt:
    """Run the command once: exit 0 is done; a timeout or exit 75 is tried again; other exits give up."""
    stdin = json.dumps(delivery).encode("ascii")  # ASCII-escaped: any string JSON can hold survives
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *target.exec,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=environment(delivery, files, replay),
            start_new_session=True,  # its own process group, so a timeout ends the script's children too
        )
    except OSError as exc:  # not found, not executable: maybe installed later, so retried like a target down
        return Attempt(False, f"cannot run {target.exec[0]}: {exc.strerror or exc}", result=_result(None, ""))
    assert proc.stdin is not None
    assert proc.stderr is not None
    tail = bytearray()
    try:
        async with asyncio.timeout(target.timeout):
            await asyncio.gather(_feed(proc.stdin, stdin), _drain(proc.stderr, tail))
            code = await proc.wait()
    except TimeoutError:
        await _end(proc)
        error = f"timed out after {target.timeout:g} s"
        return Attempt(False, error, result=_result(None, _text(tail), time.monotonic() - started))
    except BaseException:  # relay is stopping: leave no script behind
        await _end(proc)
        raise
    result = _result(code, _text(tail), time.monotonic() - started)
    if code == 0:
        return Attempt(True, result=result)
    error = f"exit code {code}" + (f": {result['stderr'].splitlines()[-1]}" if result["stderr"].strip() else "")
    return Attempt(False, error, retry=code == TEMPFAIL, result=result)


def _result(code: int | None, stderr: str, seconds: float | None = None) -> dict[str, Any]:
    return {"exit_code": code, "stderr": stderr, "seconds": None if seconds is None else round(seconds, 3)}


def _text(tail: bytearray) -> str:
    return bytes(tail).decode("utf-8", "replace").strip()


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a command need not read its stdin
        pipe.write(data)
        await pipe.drain()
    pipe.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await pipe.wait_closed()


async def _drain(pipe: asyncio.StreamReader, tail: bytearray) -> None:
    """Read stderr to its end, keeping only the last STDERR_TAIL bytes (a chatty script cannot fill memory)."""
    while chunk := await pipe.read(65536):
        tail += chunk
        del tail[: max(0, len(tail) - STDERR_TAIL)]


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the command's process group, SIGKILL if it is still there two seconds later."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
            return
        except TimeoutError:
            continue
