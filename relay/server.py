"""`relay serve`: both listeners on one event loop, relay's own signal handling and a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.app import create_admin_app, create_public_app
from relay.config import Settings, ensure_token
from relay.connections import (
    MAX_HEAD_BYTES,
    ConnectionLimits,
    Throttle,
    accept_error_handler,
    protocol_class,
    public_connection_cap,
)
from relay.errors import ConfigError, RelayError
from relay.escaping import EscapingFormatter, JSONResponse
from relay.journal import ensure_unlocked
from relay.log_once import OncePerProcess
from relay.redact import RedactingFilter, mask_token
from relay.runtime import Relay
from relay.sd_notify import SystemdNotifier

logger = logging.getLogger("relay")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: relay owns SIGTERM/SIGINT for both listeners.

    uvicorn >= 0.29 re-raises the captured signal after shutdown, which ends the process with 143 and skips
    `finally` blocks; relay must instead drain, flush the log and exit 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def configure_logging(settings: Settings, redactor: RedactingFilter) -> None:
    """One line per record on stderr, which journald keeps with its own timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(EscapingFormatter(fmt))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, OncePerProcess) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(OncePerProcess())  # two servers, one process
    logging.getLogger("pyngrok").setLevel(max(logging.WARNING, root.level))
    # One line per provider request (every poll_interval per watched task) is noise; relay logs what it learns.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


def choose_stack(http: str) -> tuple[str, LoopFactory | None]:
    """The HTTP protocol ("httptools" or "h11") and event loop for `server.http`: the fastest installed for auto."""
    if http == "h11":
        return "h11", None
    try:
        import httptools  # noqa: F401
        import uvloop
    except ImportError:
        if http == "httptools":
            raise ConfigError(
                'server.http: "httptools" needs the httptools and uvloop packages (pip install httptools uvloop); '
                'or set "h11"'
            ) from None
        return "h11", None
    return "httptools", uvloop.new_event_loop


def bind(host: str, port: int, what: str) -> socket.socket:
    """Bind a listening socket now, so a busy port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets that say so, and
    # without it every keep-alive request waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RelayError(f"{what}: cannot listen on {host}:{port}: {exc.strerror} (change {what}.port)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: ASGIApp, protocol: type[asyncio.Protocol], settings: Settings) -> _Server:
    # Both servers share the "uvicorn.access" logger, and a Config built with access_log=False switches it off
    # for the whole process; so access_log stays True and the admin listener's protocol keeps out of it.
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="off",
        access_log=True,
        http=protocol,
        ws="none",
        proxy_headers=False,  # the tunnel's X-Forwarded-For must not change who relay thinks is asking
        server_header=False,
        timeout_keep_alive=int(max(1, settings.server.idle_timeout)),
        timeout_graceful_shutdown=20,
        # Above the guard's own limit (connections.MAX_HEAD_BYTES), so both stacks answer an oversized head alike.
        h11_max_incomplete_event_size=2 * MAX_HEAD_BYTES,
    )
    return _Server(config)


class StartingGate:
    """The public app behind a gate: until relay can record, every request gets a clear 503, not a wait."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.is_open = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on once open; until then answer 503 with Retry-After."""
        if self.is_open or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "relay is starting; retry shortly"}, status_code=503, headers={"retry-after": "2"}
        )
        await response(scope, receive, send)


class _Signals:
    """The first SIGTERM or SIGINT starts a clean drain; a second one ends the process at once.

    Plain signal handlers, not the loop's: a second Ctrl-C must work even when the drain itself is stuck.
    Nothing acknowledged is lost by the hard exit: every 200 was fsynced to the journal first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
        self._loop = loop
        self._stopping = stopping
        self._received = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over SIGTERM and SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Give the signals back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._received:
            self._received = True
            self._loop.call_soon_threadsafe(self._stopping.set)
            return
        # No logging here: the signal may have interrupted a thread holding the logging lock.
        name = signal.Signals(signum).name
        message = f"relay: second {name}: exiting now without draining (acknowledged callbacks are on disk)\n"
        os.write(2, message.encode())
        os._exit(128 + signum)


def serve(settings: Settings) -> int:
    """Run relay in the foreground until SIGTERM or SIGINT; 0 after a clean drain."""
    redactor = RedactingFilter()
    configure_logging(settings, redactor)
    token = ensure_token(settings)
    redactor.add(token)
    for secret in (
        settings.tunnel.authtoken.get_secret_value(),
        settings.provider.api_key.get_secret_value(),
        settings.provider.hmac_key.get_secret_value(),
        *(u.get_secret_value() for u in settings.notify.urls),
        *(f.secret.get_secret_value() for f in settings.forward),
        *(f.url for f in settings.forward),  # a webhook URL's path is often its only secret
    ):
        redactor.add(secret)
    http, loop_factory = choose_stack(settings.server.http)
    logger.info("HTTP: %s on %s", http, "uvloop" if loop_factory else "asyncio")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(settings, token, http))


def _limits(settings: Settings, throttle: Throttle) -> tuple[ConnectionLimits, ConnectionLimits]:
    wanted = settings.server.max_connections
    cap, nofile = public_connection_cap(wanted, settings.admin.max_connections)
    if cap < 1:
        raise RelayError(f"the open-files limit ({nofile}) leaves no room for connections: raise LimitNOFILE")
    if cap < wanted:
        logger.warning(
            "server.max_connections lowered from %d to %d to fit the open-files limit (%d); raise LimitNOFILE",
            wanted,
            cap,
            nofile,
        )
    timeout = settings.server.header_timeout
    return (
        ConnectionLimits("public", cap, timeout, throttle),
        ConnectionLimits("admin", settings.admin.max_connections, timeout, throttle),
    )


async def _serve(settings: Settings, token: str, http: str) -> int:
    for path in (settings.log_path, settings.outbox_path):  # "another relay owns this log" beats "port in use"
        ensure_unlocked(path)
    loop = asyncio.get_running_loop()
    throttle = Throttle()
    loop.set_exception_handler(accept_error_handler(throttle))
    public_limits, admin_limits = _limits(settings, throttle)
    public_sock = bind(settings.server.host, settings.server.port, "server")
    admin_sock = bind(settings.admin.host, settings.admin.port, "admin")
    relay = Relay(settings, token, local_port=public_sock.getsockname()[1])
    stopping = asyncio.Event()
    signals = _Signals(loop, stopping)
    signals.install()
    try:
        return await _run(settings, relay, http, (public_limits, admin_limits), (public_sock, admin_sock), stopping)
    finally:
        signals.restore()
        for sock in (public_sock, admin_sock):
            sock.close()


async def _run(
    settings: Settings,
    relay: Relay,
    http: str,
    limits: tuple[ConnectionLimits, ConnectionLimits],
    sockets: tuple[socket.socket, socket.socket],
    stopping: asyncio.Event,
) -> int:
    notifier = SystemdNotifier.from_environment()
    gate = StartingGate(create_public_app(relay.receiver))
    public = _uvicorn(gate, protocol_class(http, limits[0], access_log=True), settings)
    # Serving from the start, so a sender that comes early gets a 503 now rather than a wait in the backlog.
    servers = [asyncio.create_task(public.serve(sockets=[sockets[0]]), name="public")]
    try:
        await relay.start()
    except BaseException:
        public.should_exit = True
        await asyncio.gather(*servers, return_exceptions=True)
        raise
    while not public.started and not servers[0].done():
        await asyncio.sleep(0.01)
    _announce(relay, sockets[1])
    # READY=1 and the open gate in one step (no await between): no sender gets a 200 before systemd hears of it.
    # The admin listener answers only from now on, so a /healthz that answers means callbacks are let through.
    notifier.ready(relay.status_line())
    gate.is_open = True
    admin_protocol = protocol_class(http, limits[1], access_log=settings.log.level == "debug")
    admin = _uvicorn(create_admin_app(relay.admin_services()), admin_protocol, settings)
    servers.append(asyncio.create_task(admin.serve(sockets=[sockets[1]]), name="admin"))
    while not admin.started and not any(t.done() for t in servers):
        await asyncio.sleep(0.01)
    watchdog = asyncio.create_task(notifier.keep_alive(relay.status_line), name="watchdog")
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait([stop_wait, *servers], return_when=asyncio.FIRST_COMPLETED)

    logger.info("shutting down: draining in-flight requests")
    notifier.stopping()
    relay.receiver.interrupt_reads()  # bodies still incomplete get their 408 now, not a cancellation later
    public.should_exit = admin.should_exit = True
    relay.events.close()  # open pages' event streams would otherwise hold the drain for its whole timeout
    await asyncio.gather(*servers, return_exceptions=True)
    watchdog.cancel()
    stop_wait.cancel()
    try:
        await relay.stop()
    except Exception as exc:  # whatever failed, the journals hold every acknowledged callback for the next start
        logger.error("stopped with an error: %s", exc)
    else:
        logger.info("stopped")
    return 0


def _announce(relay: Relay, admin_sock: socket.socket) -> None:
    url = relay.callback_url()
    lines = []
    if url:
        lines.append(f"callback URL: {mask_token(url)}  (`relay url` prints it whole)")
    else:
        lines.append(f"no public callback URL: {relay.public_url_problem()}")
        lines.append(f"local callback URL: {mask_token(relay.local_callback_url())}  (`relay url --local` prints it)")
    host, port = admin_sock.getsockname()[:2]
    lines.append(f"admin page: http://{host}:{port}/")
    for line in lines:
        print(f"relay: {line}", flush=True)
