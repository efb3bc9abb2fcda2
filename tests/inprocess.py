"""relay's parts served in-process: both apps on real uvicorn servers on loopback ports, on an event loop of their own.

For tests that need to reach inside a running relay (a hook on the admin app's reads) while still talking real HTTP
to real servers over real sockets. Signals and systemd are left to the subprocess tests (conftest.make_relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from relay.app import create_admin_app, create_public_app
from relay.config import parse_settings
from relay.runtime import Relay
from relay.server import bind
from tests.conftest import TOKEN


@dataclass
class InProcessRelay:
    """Where the in-process relay answers, and the relay itself."""

    relay: Relay
    port: int
    admin_port: int

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback/{TOKEN}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@contextlib.contextmanager
def serve_in_process(
    state: Path, admin: dict[str, Any] | None = None, **sections: dict[str, Any]
) -> Iterator[InProcessRelay]:
    """Run relay with `sections` of config and `admin` overrides of its AdminServices until the block ends."""
    raw: dict[str, Any] = {
        "server": {"token": TOKEN},
        "storage": {"state_dir": str(state)},
        "tunnel": {"provider": "none", "public_url": "https://relay.example.test"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    settings = parse_settings(raw, {})
    public_sock, admin_sock = bind("127.0.0.1", 0, "server"), bind("127.0.0.1", 0, "admin")
    relay = Relay(settings, TOKEN, local_port=public_sock.getsockname()[1])
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()
    failure: list[BaseException] = []

    def quiet(app: Any) -> uvicorn.Server:
        return uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False))

    async def main() -> None:
        await relay.start()
        services = dataclasses.replace(relay.admin_services(), **(admin or {}))
        servers = [quiet(create_public_app(relay.receiver)), quiet(create_admin_app(services))]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(servers, (public_sock, admin_sock), strict=True)
        ]
        while not all(server.started for server in servers):
            await asyncio.sleep(0.01)
        ready.set()
        await stop.wait()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        await relay.stop()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="relay-in-process", daemon=True)
    thread.start()
    ready.wait(60)
    if failure:
        raise failure[0]
    try:
        yield InProcessRelay(relay, public_sock.getsockname()[1], admin_sock.getsockname()[1])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        for sock in (public_sock, admin_sock):
            sock.close()
    if failure:
        raise failure[0]
