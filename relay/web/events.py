"""`GET /events`: server-sent events for the page, one per recorded delivery and per job state change.

The broker is fed on the event loop (the store's and the job queue's subscriptions) and fans out to one bounded
queue per open page. Events carry ids and a summary, never a payload or a secret: the page fetches what it shows.
A page that reconnects (relay restarted, the network blinked) sends the last id it saw and gets what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.formatting import titles

#: Milliseconds a page waits before reconnecting (sent as `retry:`); relay restarts in about a second.
RETRY_MS = 2000
#: Seconds between comments that keep proxies from closing an idle stream, and reveal a page that left.
KEEPALIVE = 15.0
#: Events a slow page may fall behind by before it is dropped (it reconnects and catches up by id).
QUEUE = 512
#: Deliveries sent to a reconnecting page at most; beyond that it reloads.
BACKLOG = 200


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    name: str
    data: Mapping[str, Any]
    id: int | None = None

    def encode(self) -> bytes:
        """The event in the text/event-stream format (JSON has no raw newlines, so one data line)."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.name}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


def delivery_event(doc: Mapping[str, Any]) -> Event:
    """What the page needs to know of a recorded delivery: which card changed, and a line to announce it."""
    data = {
        "id": doc.get("id"),
        "task_id": doc.get("task_id"),
        "kind": doc.get("kind"),
        "stage": doc.get("stage"),
        "ok": doc.get("ok"),
        "task_state": doc.get("task_state"),
        "duplicate": bool(doc.get("duplicate")),
        "titles": titles(doc)[:5],
    }
    return Event("delivery", data, int(doc["id"]) if isinstance(doc.get("id"), int) else None)


class _Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE)

    def offer(self, event: Event | None) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # too slow: end its stream; it reconnects with its last id and catches up
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class EventBroker:
    """Fans recorded deliveries and job changes out to every open page."""

    def __init__(self) -> None:
        self._clients: set[_Client] = set()
        self.closed = False
        #: Also called with each recorded delivery (the chart's tally).
        self.delivery_listeners: list[Callable[[Mapping[str, Any]], None]] = []

    @property
    def clients(self) -> int:
        """Pages connected now."""
        return len(self._clients)

    def publish(self, event: Event) -> None:
        """Send `event` to every open page (on the event loop)."""
        for client in list(self._clients):
            client.offer(event)

    def delivery(self, doc: Mapping[str, Any]) -> None:
        """Store subscriber: a delivery was recorded."""
        for listener in self.delivery_listeners:
            listener(doc)
        self.publish(delivery_event(doc))

    def job(self, kind: str, row: Mapping[str, Any]) -> None:
        """Job queue subscriber: a job (alert, download, watch, …) was queued or changed state."""
        self.publish(Event("job", {"kind": kind, "task_id": row.get("task_id"), "state": row.get("state")}))

    def watch(self, row: Mapping[str, Any]) -> None:
        """Watch list listener: a task was watched or its watch state changed."""
        self.publish(Event("watch", {"task_id": row.get("task_id"), "state": row.get("state")}))

    def close(self) -> None:
        """End every stream, so a shutdown is not held up by open pages (they reconnect to the next relay)."""
        self.closed = True
        for client in list(self._clients):
            client.offer(None)

    async def stream(
        self,
        after: int | None,
        backlog: Callable[[int], Any],
    ) -> AsyncIterator[bytes]:
        """One page's stream: `retry:`, what it missed after id `after` (read by `backlog`), then live events."""
        client = _Client()
        self._clients.add(client)  # before reading the backlog, so nothing recorded meanwhile falls between
        try:
            yield f"retry: {RETRY_MS}\n: relay events\n\n".encode()
            sent = after or 0
            if after is not None:
                for doc in await backlog(after):
                    yield delivery_event(doc).encode()
                    sent = max(sent, int(doc.get("id") or 0))
            while not self.closed:
                try:
                    event = await asyncio.wait_for(client.queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if event is None:
                    break
                if event.name == "delivery" and event.id is not None and event.id <= sent:
                    continue  # already sent from the backlog
                yield event.encode()
        finally:
            self._clients.discard(client)


def parse_after(last_event_id: str | None, after: str | None) -> int | None:
    """The id a page saw last: the `Last-Event-ID` header its EventSource sends, else its `after` parameter."""
    for value in (last_event_id, after):
        with contextlib.suppress(TypeError, ValueError):
            number = int(value)  # type: ignore[arg-type]
            if number >= 0:
                return number
    return None
