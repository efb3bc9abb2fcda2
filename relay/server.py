"""`relay serve`: both listeners on one event loop, relay's own signal handling and a clean drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from relay.app import create_admin_app, create_public_app
from relay.config import Settings, ensure_token
from relay.errors import RelayError
from relay.journal import ensure_unlocked
from relay.log_once import OncePerProcess
from relay.redact import RedactingFilter, mask_token
from relay.runtime import Relay
from relay.sd_notify import SystemdNotifier

logger = logging.getLogger("relay")


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
    handler.setFormatter(logging.Formatter(fmt))
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


class _QuietH11Protocol(H11Protocol):
    """uvicorn's HTTP protocol without access log lines (the admin listener's, unless log.level is debug)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access_log = False


def _uvicorn(app: object, *, access_log: bool) -> _Server:
    # Both servers share the "uvicorn.access" logger, and a Config built with access_log=False switches it off
    # for the whole process; so access_log stays True and a quiet protocol keeps one listener out of it.
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,
        lifespan="off",
        access_log=True,
        http=H11Protocol if access_log else _QuietH11Protocol,
        proxy_headers=False,  # the tunnel's X-Forwarded-For must not change who relay thinks is asking
        server_header=False,
        timeout_keep_alive=20,
        timeout_graceful_shutdown=20,
    )
    return _Server(config)


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
    return asyncio.run(_serve(settings, token))


async def _serve(settings: Settings, token: str) -> int:
    for path in (settings.log_path, settings.outbox_path):  # "another relay owns this log" beats "port in use"
        ensure_unlocked(path)
    public_sock = bind(settings.server.host, settings.server.port, "server")
    admin_sock = bind(settings.admin.host, settings.admin.port, "admin")
    notifier = SystemdNotifier.from_environment()
    relay = Relay(settings, token, local_port=public_sock.getsockname()[1])
    await relay.start()
    public = _uvicorn(create_public_app(relay.receiver), access_log=True)
    admin = _uvicorn(create_admin_app(relay.admin_services()), access_log=settings.log.level == "debug")

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    servers = [
        asyncio.create_task(public.serve(sockets=[public_sock]), name="public"),
        asyncio.create_task(admin.serve(sockets=[admin_sock]), name="admin"),
    ]
    while not (public.started and admin.started) and not any(t.done() for t in servers):
        await asyncio.sleep(0.01)
    _announce(settings, relay, admin_sock)
    notifier.ready(relay.status_line())
    watchdog = asyncio.create_task(notifier.keep_alive(relay.status_line), name="watchdog")
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait([stop_wait, *servers], return_when=asyncio.FIRST_COMPLETED)

    logger.info("shutting down: draining in-flight requests")
    notifier.stopping()
    public.should_exit = admin.should_exit = True
    relay.events.close()  # open pages' event streams would otherwise hold the drain for its whole timeout
    await asyncio.gather(*servers, return_exceptions=True)
    watchdog.cancel()
    stop_wait.cancel()
    await relay.stop()
    for sock in (public_sock, admin_sock):
        sock.close()
    logger.info("stopped")
    return 0


def _announce(settings: Settings, relay: Relay, admin_sock: socket.socket) -> None:
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
