"""The boot test's machine: one Debian container booted for the module, and a report of what each phase took."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.machine import BootFailed, Machine, booted
from tests.system.rootfs import cached_root, host_release

ROOT = Path(__file__).resolve().parents[2]
REPORT: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the phases' times and the measured exposure scores after a boot test run."""
    if REPORT:
        terminalreporter.write_sep("-", "systemd boot test")
        for name, value in REPORT.items():
            terminalreporter.write_line(f"{name:<32} {value}")


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Note in the report how long the block took."""
    started = time.monotonic()
    try:
        yield
    finally:
        REPORT[name] = f"{time.monotonic() - started:.1f} s"


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A booted Debian with systemd as PID 1, on a throwaway overlay of the cached debootstrap root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap builds a Debian root filesystem and systemd-nspawn boots it")
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: apt-get install systemd-container debootstrap (.ci/run does)")
    started = time.monotonic()
    logs = tmp_path_factory.mktemp("systemd-boot")
    with contextlib.ExitStack() as stack:
        root, built = cached_root(host_release(), logs / "debootstrap.log")
        REPORT["debootstrap"] = f"{built:.1f} s" if built else "cached"
        try:
            with timed("boot to running"):
                booted_machine = stack.enter_context(booted(root, logs / "machine", ROOT, logs / "nspawn.log"))
        except BootFailed as exc:
            pytest.skip(f"systemd-nspawn cannot boot a container on this machine: {exc}")
        yield booted_machine
        journal = logs / "journal.txt"  # kept for a look at what the run did
        journal.write_text(booted_machine.run("journalctl --no-pager", check=False, timeout=60).stdout)
        REPORT["the container's journal"] = str(journal)
    REPORT["total"] = f"{time.monotonic() - started:.1f} s"
