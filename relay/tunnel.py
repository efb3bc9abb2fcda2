"""How senders on the internet reach the public listener: an ngrok tunnel kept alive, or a fixed URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyngrok.conf import PyngrokConfig

from relay import agent_pid
from relay.config import Settings, TunnelSettings
from relay.errors import TunnelAuthError, TunnelError

logger = logging.getLogger("relay.tunnel")

UrlChanged = Callable[[str | None, str], None]
Restored = Callable[[], None]
_AUTH_HINTS = ("authentication failed", "authtoken", "err_ngrok_105", "err_ngrok_107", "err_ngrok_4018")
_SESSION_LIMIT = "err_ngrok_108"


class Tunnel(Protocol):
    """What relay needs from a tunnel."""

    public_url: str | None
    state: str  # "up", "starting", "down", "disabled"
    problem: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class FixedUrl:
    """`provider = "none"`: the user's own reverse proxy, Cloudflare or Tailscale serves `public_url`."""

    def __init__(self, public_url: str, problem: str | None = None) -> None:
        self.public_url = public_url or None
        # A fixed URL is "up" (relay_tunnel_up 1, as /healthz agrees); without one there is no tunnel at all.
        self.state = "up" if public_url else "disabled"
        self.problem = "" if public_url else (problem or 'tunnel.provider is "none" and tunnel.public_url is empty')

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True)
class AgentFiles:
    """Where pyngrok finds (or downloads) the agent and its config (empty: pyngrok's default), and its pid file."""

    path: str = ""
    config: str = ""
    pid_file: Path | None = None


def make_tunnel(
    settings: Settings, local_port: int, on_url_change: UrlChanged, on_restored: Restored | None = None
) -> Tunnel:
    """The tunnel `[tunnel]` asks for; ngrok without an authtoken (or agent config) means no tunnel."""
    tunnel = settings.tunnel
    if tunnel.provider == "none" or tunnel.ngrok_without_credentials:
        return FixedUrl(tunnel.public_url, tunnel.no_public_url_reason)
    agent = AgentFiles(settings.ngrok_agent_path, settings.ngrok_agent_config, settings.ngrok_pid_path)
    return NgrokTunnel(tunnel, local_port, on_url_change, agent, on_restored)


class NgrokTunnel:
    """An ngrok agent run through pyngrok, pointed at the public listener only, and supervised."""

    def __init__(
        self,
        settings: TunnelSettings,
        local_port: int,
        on_url_change: UrlChanged,
        agent: AgentFiles | None = None,
        on_restored: Restored | None = None,
    ) -> None:
        self.settings = settings
        self.on_restored = on_restored  # the tunnel came back on the same URL after being down
        self.agent = agent or AgentFiles(settings.ngrok_path, settings.ngrok_config)
        self.local_port = local_port
        self.on_url_change = on_url_change
        self.public_url: str | None = None
        self.state = "starting"
        self.problem = ""
        self._config: PyngrokConfig | None = None
        self._supervisor: asyncio.Task[None] | None = None

    def _pyngrok_config(self) -> PyngrokConfig:
        config = PyngrokConfig(
            ngrok_path=self.agent.path or None,
            config_path=self.agent.config or None,
            startup_timeout=max(1, int(self.settings.startup_timeout)),
            monitor_thread=True,
            start_new_session=True,
        )
        # pyngrok would pass the token as `--authtoken T`, visible to anyone running `ps`. The agent reads
        # NGROK_AUTHTOKEN from its environment instead.
        config.auth_token = None
        token = self.settings.authtoken.get_secret_value()
        if token:
            os.environ["NGROK_AUTHTOKEN"] = token
        # pyngrok probes the agent's local API with urllib, which honours http_proxy.
        no_proxy = {p for p in os.environ.get("NO_PROXY", "").split(",") if p} | {
            "127.0.0.1",
            "localhost",
            "::1",
        }
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(sorted(no_proxy))
        return config

    async def start(self) -> None:
        """Open the tunnel (a failure here is fatal) and start supervising it."""
        self._config = self._pyngrok_config()
        path = Path(getattr(self._config, "ngrok_path", ""))
        if not path.exists():
            logger.warning("no ngrok agent at %s: downloading it now (`relay install-ngrok` does this ahead)", path)
        if self.agent.pid_file is not None:
            await asyncio.to_thread(agent_pid.end_leftover, self.agent.pid_file)
        await self._open()
        self._supervisor = asyncio.create_task(self._supervise(), name="tunnel-supervisor")

    async def _open(self) -> None:
        self.state = "starting"
        try:
            async with asyncio.timeout(self.settings.startup_timeout + 5):
                url = await asyncio.to_thread(self._connect)
        except TimeoutError:
            self._kill()
            self._fail(f"the ngrok agent did not start within {self.settings.startup_timeout:g} s")
        except TunnelError as exc:
            self._kill()
            self.state, self.problem = "down", str(exc)
            raise
        old, self.public_url = self.public_url, url
        self.state, self.problem = "up", ""
        logger.info("tunnel up: %s -> 127.0.0.1:%d", url, self.local_port)
        if old and old != url:
            logger.warning("the public URL changed from %s to %s", old, url)
            self.on_url_change(old, url)
        elif old and self.on_restored is not None:
            self.on_restored()

    def _fail(self, message: str) -> None:
        self.state, self.problem = "down", message
        raise TunnelError(message)

    def _connect(self) -> str:
        from pyngrok import ngrok, process
        from pyngrok.exception import PyngrokError, PyngrokNgrokError

        options: dict[str, str] = {}
        if self.settings.domain:
            options["url"] = f"https://{self.settings.domain}"
        try:
            tunnel = ngrok.connect(f"http://127.0.0.1:{self.local_port}", pyngrok_config=self._config, **options)
        except PyngrokNgrokError as exc:
            reason = str(exc.ngrok_error or exc)
            if _SESSION_LIMIT in reason.lower():  # ngrok words it "authentication failed", but the token is fine
                raise TunnelError(
                    "another ngrok agent is already online with this authtoken and the account allows one "
                    "(ERR_NGROK_108): stop that agent, or give relay an authtoken of its own"
                ) from None
            if any(hint in reason.lower() for hint in _AUTH_HINTS):
                raise TunnelAuthError(
                    f"ngrok refused the authtoken ({reason}): fix tunnel.authtoken or NGROK_AUTHTOKEN"
                ) from None
            raise TunnelError(f"the ngrok agent failed: {reason}") from None
        except (PyngrokError, OSError) as exc:
            raise TunnelError(f"cannot open the ngrok tunnel: {exc}") from None
        if not tunnel.public_url:
            raise TunnelError("the ngrok agent returned no public URL")
        config = self._config
        pid_file = self.agent.pid_file
        if pid_file is not None and config is not None and process.is_process_running(config.ngrok_path):
            agent_pid.record(pid_file, process.get_process(config).proc.pid)
        return str(tunnel.public_url).rstrip("/")

    def _alive(self) -> bool:
        from pyngrok import ngrok, process

        path = getattr(self._config, "ngrok_path", "")
        if not process.is_process_running(path):
            return False
        try:
            urls = {str(t.public_url).rstrip("/") for t in ngrok.get_tunnels(pyngrok_config=self._config)}
        except Exception:  # any failure to read the agent's API means the tunnel is not known to be up
            return False
        return self.public_url in urls

    async def _supervise(self) -> None:
        delay = self.settings.check_interval
        while True:
            await asyncio.sleep(delay)
            if await asyncio.to_thread(self._alive):
                delay = self.settings.check_interval
                continue
            logger.warning("the tunnel is down; restarting the ngrok agent")
            self.state, self.problem = "down", "the ngrok agent died or lost the tunnel"
            await asyncio.to_thread(self._kill)
            try:
                await self._open()
                delay = self.settings.check_interval
            except TunnelError as exc:
                logger.error("could not restore the tunnel: %s", exc)
                delay = min(self.settings.check_interval, 5.0)

    def _kill(self) -> None:
        from pyngrok import ngrok

        path = getattr(self._config, "ngrok_path", "")
        with contextlib.suppress(Exception):
            ngrok.kill(pyngrok_config=self._config)
        with contextlib.suppress(Exception):
            from pyngrok import process

            process.kill_process(path)

    async def stop(self) -> None:
        """Stop supervising, close the tunnel and end the agent process."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.to_thread(self._kill)
        if self.agent.pid_file is not None:
            agent_pid.forget(self.agent.pid_file)
        self.state = "down"
