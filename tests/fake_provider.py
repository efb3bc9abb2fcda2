"""A fake of the provider's API (PROVIDER_API.md) on 127.0.0.1: submit and record-info for every kind, scripted.

It checks the Bearer key (a wrong one gets code 401 with HTTP 200, as the provider answers), creates a task for
each submit, and answers each poll of a task with the next answer of its script (the last one repeats; the default
script is "pending, then success"). `fail_next` makes the next requests answer with an error code, an HTML page or
after a delay; `rate_limit` answers code 430 past that many requests per second. Everything it receives is kept in
`requests`. It runs uvicorn in a thread, so tests can script it and inspect it directly.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from relay.provider.operations import OPERATIONS, POLL_PATHS
from tests import provider_answers as pa

PROVIDER_KEY = "pk-test-0123456789abcdef"

Answer = dict[str, Any] | str  # an envelope, or "html" for an HTML error page


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Task:
    """A task the fake knows: its kind, the answers its polls get in turn, and its callBackUrl."""

    kind: str
    script: list[Answer]
    callback_url: str | None = None
    polls: int = 0


@dataclass
class Reply:
    """An override for the next request: an answer, and seconds to wait before giving it."""

    answer: Answer | None = None
    delay: float = 0.0
    paths: tuple[str, ...] = ()  # only requests to these paths (empty: any)


@dataclass
class FakeProvider:
    """The fake's state; `url` is its base URL once started."""

    key: str = PROVIDER_KEY
    tasks: dict[str, Task] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    rate_limit: float | None = None
    next_scripts: list[list[Answer]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- scripting -----------------------------------------------------------------------------------------

    def script(self, task_id: str, kind: str, *answers: Answer) -> None:
        """Make `task_id` known, of `kind`, its polls answered with `answers` in turn (the last repeats)."""
        with self.lock:
            self.tasks[task_id] = Task(kind, list(answers) or [pa.pending(kind, task_id), pa.success(kind, task_id)])

    def script_next_submit(self, *answers: Answer) -> None:
        """The script the next submitted task gets (use "{task}" nowhere: answers are built per task later)."""
        with self.lock:
            self.next_scripts.append(list(answers))

    def fail_next(
        self, count: int, answer: Answer | None = None, delay: float = 0.0, paths: tuple[str, ...] = ()
    ) -> None:
        """The next `count` requests (to `paths`, if given) get `answer` (after `delay` seconds)."""
        with self.lock:
            self.replies += [Reply(answer, delay, paths) for _ in range(count)]

    # -- inspecting ----------------------------------------------------------------------------------------

    def polls(self, task_id: str | None = None) -> list[Seen]:
        """The record-info requests received (for one task, if given)."""
        with self.lock:
            return [
                r for r in self.requests if r.method == "GET" and (task_id is None or r.query.get("taskId") == task_id)
            ]

    def submits(self) -> list[Seen]:
        """The submit requests received."""
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def callback_path(self, task_id: str) -> str:
        """The path and query of the callBackUrl `task_id` was submitted with (to post its callback locally)."""
        url = self.tasks[task_id].callback_url or ""
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    # -- the app -------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The Starlette app answering every submit and record-info path."""
        submit_paths = {op.path: op for op in OPERATIONS.values()}
        poll_kinds = {path: kind for kind, path in POLL_PATHS.items()}

        async def endpoint(request: Request) -> Response:
            body: Any = None
            if request.method == "POST":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
            path = request.url.path
            seen = Seen(request.method, path, dict(request.query_params), dict(request.headers), body, time.time())
            with self.lock:
                self.requests.append(seen)
                reply = next((r for r in self.replies if not r.paths or path in r.paths), None)
                if reply is not None:
                    self.replies.remove(reply)
                limited = self._over_rate()
            if reply is not None and reply.delay:
                await asyncio.sleep(reply.delay)
            if reply is not None and reply.answer is not None:
                return _respond(reply.answer)
            if request.headers.get("authorization") != f"Bearer {self.key}":
                return JSONResponse({"code": 401, "msg": "You do not have access permissions"})
            if limited:
                return JSONResponse({"code": 430, "msg": "Your call frequency is too high. Please try again later."})
            if request.method == "POST" and path in submit_paths:
                return self._submit(submit_paths[path].kind, body)
            if request.method == "GET" and path in poll_kinds:
                return self._poll(request.query_params.get("taskId", ""))
            return JSONResponse({"code": 404, "msg": "Not Found"}, status_code=404)

        return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])

    def _over_rate(self) -> bool:
        if self.rate_limit is None:
            return False
        now = time.time()
        return sum(1 for r in self.requests if now - r.at < 1.0) > self.rate_limit

    def _submit(self, kind: str, body: Any) -> Response:
        if not isinstance(body, dict) or not body.get("callBackUrl"):
            return JSONResponse({"code": 400, "msg": "callBackUrl is required"})
        task_id = f"fake-{kind}-{next(self._ids):04d}"
        with self.lock:
            script = self.next_scripts.pop(0) if self.next_scripts else []
            self.tasks[task_id] = Task(kind, script, str(body["callBackUrl"]))
        return JSONResponse({"code": 200, "msg": "success", "data": {"taskId": task_id}})

    def _poll(self, task_id: str) -> Response:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return JSONResponse({"code": 200, "msg": "success", "data": None})
            script = task.script or [pa.pending(task.kind, task_id), pa.success(task.kind, task_id)]
            answer = script[min(task.polls, len(script) - 1)]
            task.polls += 1
        return _respond(answer)


def _respond(answer: Answer) -> Response:
    if answer == "html":
        return HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502)
    return JSONResponse(answer)


class Running:
    """The fake served by uvicorn in a thread on a free loopback port."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        fake.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(fake.app(), log_config=None, lifespan="off", ws="none", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> FakeProvider:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.01)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
