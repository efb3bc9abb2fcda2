"""The running relay: the log, the job queue and its workers, and the tunnel, opened and closed together."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from relay import messages
from relay.alerts import AlertSender
from relay.app import AdminServices
from relay.archive.downloads import DownloadKind
from relay.archive.service import ArchiveService
from relay.config import Settings
from relay.formatting import plural
from relay.forward.kind import ForwardKind
from relay.forward.service import DownloadJobs, Forwards
from relay.jobs import JobKind, JobQueue
from relay.metrics import Metrics
from relay.outbox import AlertKind, Outbox, archived_cover
from relay.provider import api as provider_api
from relay.provider.watchdog import Watchdog
from relay.provider.watchlist import WatchList
from relay.receiver import CallbackReceiver
from relay.store import DeliveryStore
from relay.tunnel import Tunnel, make_tunnel
from relay.web.events import EventBroker

logger = logging.getLogger("relay")


class Relay:
    """Composes relay's parts; `start()` and `stop()` bracket the servers' lifetime."""

    def __init__(self, settings: Settings, token: str, local_port: int, tunnel: Tunnel | None = None) -> None:
        self.settings = settings
        self._token = token
        self.local_port = local_port
        self.metrics = Metrics()
        self.store = DeliveryStore(settings.log_path, settings.storage.rotate_records, settings.storage.retention_days)
        self.sender = AlertSender.from_settings(settings.notify)
        alerts = AlertKind(self.sender, settings.notify, self.metrics)
        self.forward_kind = ForwardKind(settings.forward, self.store, settings.notify, self.metrics)
        self.downloads = (
            DownloadKind(settings.archive, settings.archive_dir, self.metrics, on_pause=self._downloads_paused)
            if settings.archive.enabled
            else None
        )
        #: Every kind of job the queue performs. Forwards stay last: a delivery's jobs are queued in this order,
        #: so a forward with `after = "archived"` finds the delivery's downloads already queued.
        self.kinds: list[JobKind] = [alerts, *([self.downloads] if self.downloads else []), self.forward_kind]
        self.jobs = JobQueue(settings.outbox_path, self.store, self.kinds)
        #: What the page hears live: every recorded delivery and every job state change.
        self.events = EventBroker()
        self.store.subscribe(self.events.delivery)
        self.jobs.subscribe(self.events.job)
        self.outbox = Outbox(self.jobs, alerts)
        self.archive = ArchiveService(settings.archive_dir, self.jobs, self.downloads)
        alerts.saved_to = self.archive.saved_to
        self.forward_kind.archive = DownloadJobs(self.jobs)
        self.forwards = Forwards(self.jobs, self.forward_kind, self.outbox, self.metrics)
        alerts.covers.archived = archived_cover(self.jobs)  # a cover the archive already has is not fetched again
        #: Called with (old, new) when the tunnel's public URL changes.
        self.url_listeners: list[Callable[[str | None, str], None]] = [self.outbox.url_changed]
        self.watchlist = WatchList(settings.watch_path)
        self.watchlist.listeners.append(self.events.watch)
        self.watchdog = Watchdog(
            settings.provider, self.watchlist, self.store, self.outbox.enqueue, link_base=settings.notify.link_base
        )
        self.url_listeners.append(self.watchdog.url_changed)
        self.tunnel = tunnel or make_tunnel(
            settings, local_port, on_url_change=self._url_changed, on_restored=self.watchdog.tunnel_restored
        )
        self.receiver = CallbackReceiver(
            self.store,
            token,
            settings.server.max_body_bytes,
            settings.server.body_timeout,
            self.metrics,
            hmac_key=settings.provider.hmac_key.get_secret_value(),
            known_kind=self._watched_kind,
        )
        self._stack = contextlib.AsyncExitStack()
        self.metrics.gauge("relay_outbox_depth", "Alerts waiting to be delivered", lambda: self.outbox.pending)
        self.metrics.gauge("relay_dead_alerts", "Alerts given up on", lambda: self.outbox.dead)
        self.metrics.gauge(
            "relay_tunnel_up",
            "1 while the tunnel (or tunnel.public_url) is up; absent without any public URL",
            lambda: None if self.tunnel.state == "disabled" else float(self.tunnel.state == "up"),
        )
        self.metrics.gauge(
            "relay_log_live_records",
            "Deliveries in the live log file",
            lambda: len(self.store.db.table("callbacks")),
        )
        self.metrics.gauge("relay_log_bytes", "Size of the live log file", self._log_bytes)
        self.metrics.gauge("relay_download_queue_depth", "Downloads waiting or running", self.archive.pending)
        self.metrics.gauge("relay_watched_tasks", "Watched tasks in flight", lambda: len(self.watchlist.active()))
        self.metrics.gauge("relay_provider_requests", "Requests sent to the provider", self._provider_requests)

    async def start(self) -> None:
        """Open the log, prune old archives, start the job queue, then bring the tunnel up.

        Each resource is entered into one exit stack, so `stop()` (or a failed start) closes what was opened,
        in reverse: the tunnel first (no new traffic), then the workers (pending jobs stay on disk), the log last.
        """
        try:
            await self.store.open()
            self._stack.push_async_callback(self.store.close)
            for path in self.store.prune():
                logger.info("retention: removed %s", path.name)
            if self.downloads is not None:
                await self.downloads.start()
                self._stack.push_async_callback(self.downloads.close)
            await self._stack.enter_async_context(self.forward_kind)  # its HTTP client outlives the workers
            await self._stack.enter_async_context(self.jobs)
            if self.downloads is not None:  # closed before the queue: transfers stop, their parts stay
                self._stack.push_async_callback(self.downloads.stop)
            await self._stack.enter_async_context(self.watchlist)
            await self._stack.enter_async_context(self.watchdog)
            await self.tunnel.start()
            self._stack.push_async_callback(self.tunnel.stop)
        except BaseException:
            await self._stack.aclose()
            raise
        # What start() built (modules, settings, templates, the duplicate memory) lives as long as relay: frozen
        # out of the cyclic collector, a full collection scans only what came after and takes a few ms instead of
        # the 20-50 ms that every request in flight waited for (measured: ack p99 under admin reads about halved).
        gc.freeze()

    async def stop(self) -> None:
        """Close everything `start()` opened, in reverse order."""
        await self._stack.aclose()

    def _downloads_paused(self, reason: str) -> None:
        """One alert each time the disk budget stops downloads."""
        self.jobs.spawn(self.outbox.enqueue(messages.downloads_paused(reason), key=f"archive-paused:{time.time()}"))

    def _url_changed(self, old: str | None, new: str) -> None:
        for listener in self.url_listeners:
            try:
                listener(old, new)
            except Exception:  # one consumer's bug must not keep the others from hearing of it
                logger.exception("URL change listener failed")

    def local_callback_url(self) -> str:
        """The callback URL on the public listener itself (reachable from this machine)."""
        host = self.settings.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.local_port}/callback/{self._token}"

    def callback_url(self) -> str | None:
        """What to paste as `callBackUrl`: the public base plus the token path, or None."""
        base = self.tunnel.public_url
        return f"{base}/callback/{self._token}" if base else None

    def public_url_problem(self) -> str:
        """Why there is no public URL, and what to do about it."""
        return self.tunnel.problem or "no public URL"

    def status_line(self) -> str:
        """For systemd's STATUS=: the URL (token masked) and counts."""
        url = self.tunnel.public_url
        where = f"{url}/callback/****" if url else "no public URL"
        live = plural(len(self.store.db.table("callbacks")), "live delivery", "live deliveries")
        return f"{where}; {live}; {plural(self.outbox.pending, 'alert')} pending, {self.outbox.dead} dead"

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the log can be written, the tunnel (if any) is up and alerts are not dying."""
        log_error = self.store.last_error
        tunnel = {
            "provider": self.settings.tunnel.provider,
            "state": self.tunnel.state,
            "public_url": self.tunnel.public_url,
            "problem": self.tunnel.problem or None,
        }
        alerts = {
            "pending": self.outbox.pending,
            "dead": self.outbox.dead,
            "recent_dead": self.outbox.recent_dead,
            "targets": len(self.sender.targets),
        }
        forwards = {
            "pending": self.forwards.pending,
            "dead": self.forwards.dead,
            "recent_dead": self.forwards.recent_dead,
            "targets": len(self.settings.forward),
        }
        problems = []
        if log_error:
            problems.append(f"log: {log_error}")
        if self.jobs.db.last_error:
            problems.append(f"outbox: {self.jobs.db.last_error}")
        if self.tunnel.state not in ("up", "disabled"):
            problems.append(f"tunnel: {self.tunnel.problem or self.tunnel.state}")
        if self.outbox.recent_dead:
            problems.append(f"alerts: {self.outbox.recent_dead} given up on in the last 24 h")
        archive_problems, archive = self.archive.health()
        problems += archive_problems
        if forwards["recent_dead"]:
            problems.append(f"forwards: {forwards['recent_dead']} given up on in the last 24 h")
        detail = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "log": {
                "path": str(self.settings.log_path),
                "writable": log_error is None,
                "error": log_error,
                "live_records": len(self.store.db.table("callbacks")),
                "indexing": self.store.indexer.building,
            },
            "tunnel": tunnel,
            "alerts": alerts,
            "archive": archive,
            "forwards": forwards,
        }
        return not problems, detail

    def admin_services(self) -> AdminServices:
        """What the admin app needs from here."""
        return AdminServices(
            log_path=self.settings.log_path,
            metrics=self.metrics,
            callback_url=self.callback_url,
            public_url_problem=self.public_url_problem,
            health=self.health,
            outbox_path=self.settings.outbox_path,
            local_callback_url=self.local_callback_url,
            events=self.events,
            settings=self.settings.admin,
            archive=self.archive if self.archive.enabled else None,
            local_copy=self.archive.local_copy,
            archive_bytes=self.archive.total_bytes,
            forwards=self.forwards,
            watch_state=self._watch_state,
            watched_waiting=lambda: len(self.watchlist.active()),
            extra_routes=provider_api.routes(self.watchdog),
            snapshot=self.store.snapshot,
        )

    def _watch_state(self, task_id: str) -> str | None:
        row = self.watchlist.get(task_id)
        return row["state"] if row else None

    def _watched_kind(self, task_id: str) -> str | None:
        row = self.watchlist.get(task_id)
        return row["kind"] if row else None

    def _provider_requests(self) -> float:
        return float(self.watchdog.client.requests)

    def _log_bytes(self) -> float:
        try:
            return float(self.settings.log_path.stat().st_size)
        except OSError:
            return 0.0
