"""The JSON API, health, metrics, the replay command and the event stream of the admin listener."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from relay.escaping import JSONResponse
from relay.query import Filters, parse_since, task_state
from relay.reads import read_log
from relay.web import reads
from relay.web.board import Board
from relay.web.events import BACKLOG, parse_after
from relay.web.links import curl_command
from relay.web.runner import json_body
from relay.web.services import AdminServices

#: The most deliveries one answer holds: `limit` is capped to it.
MAX_ROWS = 10_000


def _filters(request: Request) -> Filters:
    params = request.query_params
    try:
        since = parse_since(params["since"]) if params.get("since") else None
        limit = int(params.get("limit", "100"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return Filters(
        task=params.get("task") or None,
        stage=params.get("stage") or None,
        failed=params.get("failed") in ("1", "true"),
        since=since,
        limit=max(0, min(limit, MAX_ROWS)),
    )


class Api:
    """JSON and plain-text endpoints."""

    def __init__(self, services: AdminServices, board: Board) -> None:
        self.services = services
        self.board = board

    async def _select(self, filters: Filters, table: str) -> Response:
        log, held = self.services.log_path, self.services.snapshot(table)
        # Encoded on the read thread too: ten thousand deliveries are megabytes of JSON.
        return await self.services.reads.run(lambda check: _json({table: read_log(log, filters, table, held, check)}))

    async def callbacks(self, request: Request) -> Response:
        """`/api/callbacks`: deliveries, oldest first, with the CLI's filters."""
        return await self._select(_filters(request), "callbacks")

    async def rejected(self, request: Request) -> Response:
        """`/api/rejected`: rejected requests."""
        return await self._select(_filters(request), "rejected")

    async def task(self, request: Request) -> Response:
        """`/api/tasks/{task_id}`: a task's state, deliveries and alerts."""
        task_id = request.path_params["task_id"]
        docs = await self.board.deliveries(task_id, None, complete=True)  # as `relay show`: every delivery
        if not docs:
            raise HTTPException(404, "no deliveries for this task")
        alerts, forwards = await self.board.task_alerts(docs), await self.board.task_forwards(docs)
        body = {"task_id": task_id, "state": task_state(docs), "deliveries": docs, "alerts": alerts}
        archive = self.services.archive
        files = archive.files_for_task(task_id, [d["id"] for d in docs]) if archive else []
        return await self.services.reads.run(lambda check: _json({**body, "forwards": forwards, "files": files}))

    async def curl(self, request: Request) -> Response:
        """`/api/deliveries/{id}/curl`: the replay command with the token, for the page's copy button."""
        log, held, wanted = (
            self.services.log_path,
            self.services.snapshot("callbacks"),
            request.path_params["delivery_id"],
        )
        doc = await self.services.reads.run(lambda check: reads.one_delivery(log, wanted, held))
        if doc is None:
            raise HTTPException(404, "no such delivery")
        command = curl_command(self.services.local_callback_url(), doc.get("payload"), masked=False)
        return PlainTextResponse(command + "\n", headers={"cache-control": "no-store"})

    async def url(self, request: Request) -> Response:
        """`/api/url`: the callback URL to paste as callBackUrl (what `relay url` prints)."""
        url = self.services.callback_url()
        if url is None:
            return JSONResponse({"error": self.services.public_url_problem()}, status_code=503)
        return JSONResponse({"callback_url": url}, headers={"cache-control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        """`/healthz`: 200 when healthy, 503 with the problems."""
        healthy, detail = self.services.health()
        return JSONResponse(detail, status_code=200 if healthy else 503)

    async def metrics(self, request: Request) -> Response:
        """`/metrics`: Prometheus text."""
        return PlainTextResponse(self.services.metrics.render(), media_type="text/plain; version=0.0.4")

    async def events(self, request: Request) -> Response:
        """`/events`: server-sent events (see events.py)."""
        after = parse_after(request.headers.get("last-event-id"), request.query_params.get("after"))
        log = self.services.log_path

        async def backlog(since: int) -> list[dict[str, Any]]:
            return await self.services.reads.run(lambda check: reads.deliveries_after(log, since, BACKLOG))

        return StreamingResponse(
            self.services.events.stream(after, backlog),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


def _json(value: dict[str, Any]) -> Response:
    return Response(json_body(value), media_type="application/json")
