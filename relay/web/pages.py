"""The HTML views: the index of task cards, a task's page, rejected requests, and the fragments live updates fetch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from relay.formatting import mmss
from relay.forward import web as forward_web
from relay.payloads import KINDS
from relay.web import reads
from relay.web.board import Board
from relay.web.links import safe_url, task_href
from relay.web.listing import STATES, PageQuery, parse_query
from relay.web.services import AdminServices

TEMPLATES = Path(__file__).with_name("templates")


def _printable(value: Any) -> Any:
    # Bodies may carry lone surrogates (valid JSON escapes, not encodable as UTF-8): one must not break a page.
    if isinstance(value, str) and not isinstance(value, Markup):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def when(value: Any) -> str:
    """An ISO time as `2026-11-25 04:01:22 UTC` (the page's script shows it in local time)."""
    text = str(value or "")
    return text[:19].replace("T", " ") + " UTC" if len(text) >= 19 else text


def clock(value: Any) -> str:
    """An ISO time as `04:01:22` (the date is beside it on the card)."""
    text = str(value or "")
    return text[11:19] if len(text) >= 19 else text


def short_target(value: Any) -> str:
    """An alert target without its query string (Apprise's privacy-masked URLs carry every option there)."""
    return str(value or "").split("?", 1)[0]


def templates() -> Jinja2Templates:
    """The page templates, with relay's filters."""
    env = Jinja2Templates(directory=str(TEMPLATES))
    env.env.finalize = _printable
    env.env.filters.update(mmss=mmss, safe_url=safe_url, task_href=task_href, when=when, clock=clock)
    env.env.filters["short_target"] = short_target
    env.env.globals.update(STATES=STATES, KINDS=KINDS)
    return env


class Pages:
    """HTML endpoints over a Board."""

    def __init__(self, services: AdminServices, board: Board) -> None:
        self.services = services
        self.board = board
        self.templates = templates()

    async def _render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        # Rendered on a read thread: a page of cards, or a task with its payloads, is work the loop need not do.
        return await self.services.reads.run(
            lambda check: self.templates.TemplateResponse(request, name, context, status_code=status)
        )

    async def index(self, request: Request) -> Response:
        """`/`: the health strip, the chart, filters, and one card per task, newest first."""
        try:
            query = parse_query(request.query_params)
        except ValueError as exc:
            context = {"query": PageQuery(), "error": str(exc), "cards": [], "page": None, "after": 0}
            return await self._render(request, "index.html", {**context, **await self._overview()}, 400)
        page, cards = await self.board.page(query)
        context = {"query": query, "cards": cards, "page": page, "after": page.newest_id, "error": None}
        return await self._render(request, "index.html", {**context, **await self._overview()})

    async def _overview(self) -> dict[str, Any]:
        return {"strip": self.board.strip(), "chart": await self.board.chart()}

    async def overview(self, request: Request) -> Response:
        """Fragment: the health strip and the chart, for live updates."""
        return await self._render(request, "overview.html", await self._overview())

    async def _task_docs(self, request: Request) -> tuple[str | None, list[dict[str, Any]]]:
        task_id = request.path_params.get("task_id", request.query_params.get("id"))
        delivery = request.path_params.get("delivery_id")
        if task_id is None and delivery is None and request.query_params.get("delivery", "").isdigit():
            delivery = int(request.query_params["delivery"])
        if task_id is None and request.query_params.get("task") is not None:
            task_id = request.query_params["task"]
        return task_id, await self.board.deliveries(task_id, delivery)

    async def task(self, request: Request) -> Response:
        """`/tasks/{id}` (and `/task?id=`, `/deliveries/{n}`): everything about one task."""
        task_id, docs = await self._task_docs(request)
        if not docs:
            return await self._render(request, "missing.html", {"task_id": task_id}, 404)
        return await self._render(request, "task.html", await self._task_context(docs))

    async def _task_context(self, docs: list[dict[str, Any]]) -> dict[str, Any]:
        card, alerts, views = await self.board.task(docs)
        newest = max(int(d["id"]) for d in docs)
        replay = None
        if self.services.forwards is not None and card.task_id is not None:
            replay = self.services.csrf.token(forward_web.replay_purpose(card.task_id))
        forwards = await self.board.task_forwards(docs)
        context = {"card": card, "alerts": alerts, "views": views, "after": newest}
        return {**context, "forwards": forwards, "replay_token": replay}

    async def task_fragment(self, request: Request) -> Response:
        """Fragment: a task page's body, for live updates."""
        _, docs = await self._task_docs(request)
        if not docs:
            return Response(status_code=204)
        return await self._render(request, "task_body.html", await self._task_context(docs))

    async def card_fragment(self, request: Request) -> Response:
        """Fragment: one card, or 204 when the index's filters (passed along) leave it out."""
        try:
            query = parse_query({k: v for k, v in request.query_params.items() if k != "task"})
        except ValueError:
            query = PageQuery()
        _, docs = await self._task_docs(request)
        card = await self.board.one_card(docs, query)
        if card is None:
            return Response(status_code=204)
        return await self._render(request, "card.html", {"card": card})

    async def rejected(self, request: Request) -> Response:
        """`/rejected`: requests relay refused, newest first, with their reasons and bodies."""
        log, held = self.services.log_path, self.services.snapshot("rejected")
        docs = await self.services.reads.run(lambda check: reads.newest(log, "rejected", 200, held, check))
        return await self._render(request, "rejected.html", {"rejected": docs})
