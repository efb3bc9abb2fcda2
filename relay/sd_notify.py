"""systemd's notify protocol (sd_notify(3)) with the standard library: readiness, status and watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

logger = logging.getLogger("relay.systemd")


class SystemdNotifier:
    """Sends datagrams to $NOTIFY_SOCKET; does nothing when relay is not run by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 2 / 1_000_000 if watchdog_usec else None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC (honouring WATCHDOG_PID) as systemd sets them."""
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when there is no socket or it failed."""
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), address)
        except OSError as exc:
            logger.warning("cannot notify systemd: %s", exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """READY=1 once both listeners accept (and the tunnel, if any, is up)."""
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self) -> None:
        """STOPPING=1 when the drain starts."""
        self.send("STOPPING=1", "STATUS=draining")

    async def keep_alive(self, status: Callable[[], str]) -> None:
        """WATCHDOG=1 from the serving loop every half WatchdogSec: a stuck loop stops sending it."""
        if not self.address:
            return
        interval = self.watchdog_interval or 30.0
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                fields = [f"STATUS={status()}"]
                if self.watchdog_interval:
                    fields.insert(0, "WATCHDOG=1")
                self.send(*fields)
                await asyncio.sleep(interval)
