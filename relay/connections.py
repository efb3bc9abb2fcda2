"""Connections from hostile clients: a cap per listener answered with 503, header and idle timeouts, a bounded
request head, and a file-descriptor budget that keeps a reserve for the log and the admin listener.

uvicorn has no header timeout (a slowloris that sends one byte every few seconds keeps its connection forever, and
a connection that sends nothing is never timed out) and `limit_concurrency` only answers 503 once a request has
arrived, while idle connections keep their descriptors. So each listener's protocol is uvicorn's own (httptools or
h11) with `_Guard` in front of it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("relay.connections")

#: Request line and headers together; a provider's callback sends about 1 KiB of them.
MAX_HEAD_BYTES = 64 * 1024
#: How long a refused connection may take to read its 503 before it is closed.
LINGER = 2.0
#: Descriptors kept out of every listener's reach: the log, its journals and archives, the outbox, alert targets,
#: the tunnel agent, and the event loop's own.
RESERVED_FDS = 128

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 47\r\n"
    b"retry-after: 5\r\nconnection: close\r\n\r\n"
    b'{"error":"too many connections, retry shortly"}'
)
_HEAD_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Throttle:
    """Logs a recurring event at most once per `interval`, saying how many were not logged meanwhile."""

    def __init__(self, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: Any) -> bool:
        """Log `message` unless `key` was logged less than `interval` ago; True when it was logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return False
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        suffix = f" ({skipped} more in the last {now - last:.0f} s)" if skipped and last is not None else ""
        logger.log(level, message + suffix, *args)
        return True


@dataclass
class ConnectionLimits:
    """One listener's limits, and the count of connections being refused on it right now."""

    name: str
    max_connections: int
    header_timeout: float
    throttle: Throttle = field(default_factory=Throttle)
    refusing: int = 0

    @property
    def max_refusing(self) -> int:
        """Refused connections allowed to linger while they read their 503; beyond, they are dropped at once."""
        return refusal_room(self.max_connections)


def refusal_room(max_connections: int) -> int:
    """Descriptors a listener may hold for connections it is refusing, on top of `max_connections`."""
    return max(8, max_connections // 8)


class _Guard(asyncio.Protocol):
    """Put in front of a uvicorn HTTP protocol (see `protocol_class`): what uvicorn lacks against hostile clients."""

    limits: ClassVar[ConnectionLimits]
    # Set by uvicorn's protocol, which follows this class in the MRO.
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any

    _refused = False
    _lingering = False
    _deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Serve the connection, or answer 503 at once when the listener is at its cap."""
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed after header_timeout

    def data_received(self, data: bytes) -> None:
        """Feed uvicorn's parser, then time and measure the request head until it is complete."""
        if self._refused:
            return  # read and dropped, so closing later does not reset the connection before the 503 is read
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._busy():  # a whole head arrived: the app (and server.body_timeout) take over
            self._disarm()
            self._head_bytes = 0
            return
        if self._deadline is None:  # the first bytes after an idle keep-alive pause, or leftovers of a body
            self._arm()
        if self._receiving_head():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.limits.throttle.log(
                    logging.WARNING,
                    f"{self.limits.name}:head",
                    "%s listener: closed a request head over %d bytes",
                    self.limits.name,
                    MAX_HEAD_BYTES,
                )
                self._close_with(_HEAD_TOO_LARGE)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release what this connection held."""
        self._disarm()
        if self._refused:
            if self._lingering:
                self.limits.refusing -= 1
            return
        super().connection_lost(exc)

    def eof_received(self) -> None:
        """The client is done sending: close (uvicorn's own answer, and the end of a refused connection)."""
        if not self._refused:
            super().eof_received()

    def pause_writing(self) -> None:
        """Flow control, for served connections only."""
        if not self._refused:
            super().pause_writing()

    def resume_writing(self) -> None:
        """Flow control, for served connections only."""
        if not self._refused:
            super().resume_writing()

    # -- for the concrete protocols --------------------------------------------------------------------------

    def _receiving_head(self) -> bool:
        raise NotImplementedError

    # -- internals ---------------------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._busy():
            return
        self.limits.throttle.log(
            logging.INFO,
            f"{self.limits.name}:timeout",
            "%s listener: closed a connection that sent no complete request head within %g s",
            self.limits.name,
            self.limits.header_timeout,
        )
        self._close_with(_HEAD_TIMEOUT if self._head_bytes else b"")

    def _close_with(self, response: bytes) -> None:
        self._disarm()
        if response:
            self.transport.write(response)
        self.transport.close()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        limits = self.limits
        limits.throttle.log(
            logging.WARNING,
            f"{limits.name}:cap",
            "%s listener: %d connections open, its cap (max_connections); answering 503 to more",
            limits.name,
            len(self.connections),
        )
        if limits.refusing >= limits.max_refusing:
            transport.abort()  # a flood: keep the descriptors rather than be polite
            return
        limits.refusing += 1
        self._lingering = True
        transport.write(_REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self.loop.call_later(LINGER, transport.close)


class _GuardedH11(_Guard, H11Protocol):
    def _receiving_head(self) -> bool:
        return self.conn.their_state is h11.IDLE


def _guarded_httptools() -> type[_Guard]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _GuardedHttpTools(_Guard, HttpToolsProtocol):
        _in_head = False

        def on_message_begin(self) -> None:
            self._in_head = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def _receiving_head(self) -> bool:
            return self._in_head

    return _GuardedHttpTools


def protocol_class(http: str, limits: ConnectionLimits, access_log: bool) -> type[asyncio.Protocol]:
    """uvicorn's protocol for `http` ("httptools" or "h11") guarded by `limits`; quiet unless `access_log`."""
    base = _guarded_httptools() if http == "httptools" else _GuardedH11

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        if not access_log:
            # Both listeners share the "uvicorn.access" logger; the admin one keeps out of it this way.
            self.access_log = False

    return type(f"{limits.name.title()}Protocol", (base,), {"limits": limits, "__init__": __init__})


# -- descriptors ---------------------------------------------------------------------------------------------


def open_descriptors() -> int:
    """How many file descriptors this process has open."""
    try:
        return sum(1 for _ in Path("/proc/self/fd").iterdir())
    except OSError:
        return 64  # no /proc: a generous guess for what the interpreter and its libraries hold


def raise_descriptor_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never above the hard limit); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft
        return target
    return soft


def public_connection_cap(wanted: int, admin_max: int) -> tuple[int, int]:
    """The public listener's cap that fits the descriptor limit beside the admin listener and the reserve.

    Returns (cap, limit); the cap is below `wanted` when the limit is too low (LimitNOFILE), and 0 when there is
    no room at all.
    """
    in_use = open_descriptors()
    reserve = in_use + RESERVED_FDS + admin_max + refusal_room(admin_max)
    limit = raise_descriptor_limit(reserve + wanted + refusal_room(wanted))
    cap = wanted
    while cap > 0 and reserve + cap + refusal_room(cap) > limit:
        cap = min(cap - 1, (limit - reserve) * 8 // 9)
    return max(cap, 0), limit


def accept_error_handler(throttle: Throttle) -> Any:
    """An event-loop exception handler that logs asyncio's "socket.accept() out of system resource" once per
    interval: asyncio reports it for every failed accept, thousands a second under a flood."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("socket.accept() out of system resource"):
            exc = context.get("exception")
            throttle.log(logging.ERROR, "accept", "cannot accept connections: %s", exc or message)
            return
        loop.default_exception_handler(context)

    return handle
