"""The two ASGI apps: the public one senders reach, and the local admin one people and scripts use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from relay.csrf import CsrfTokens
from relay.formatting import mmss, plural, titles
from relay.forward import web as forward_web
from relay.forward.service import Forwards
from relay.metrics import Metrics
from relay.query import Filters, parse_since, select, task_state
from relay.receiver import CallbackReceiver
from relay.redact import mask_token
from relay.render import mask_targets
from relay.store import read_all

TEMPLATES = Path(__file__).with_name("templates")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_public_app(receiver: CallbackReceiver) -> Starlette:
    """Only `POST /callback/{token}`; every other path is 404 and other methods 405."""
    return Starlette(
        routes=[Route("/callback/{token}", receiver.handle, methods=["POST"])],
        exception_handlers={HTTPException: _http_error},
    )


@dataclass(frozen=True)
class AdminServices:
    """What the admin app reads from the running relay."""

    log_path: Path
    metrics: Metrics
    callback_url: Callable[[], str | None]
    public_url_problem: Callable[[], str]
    health: Callable[[], tuple[bool, dict[str, Any]]]
    alerts_for_task: Callable[[str, list[int]], list[dict[str, Any]]]
    forwards: Forwards | None = None
    csrf: CsrfTokens = field(default_factory=CsrfTokens)


def _filters(request: Request) -> Filters:
    params = request.query_params
    try:
        since = parse_since(params["since"]) if params.get("since") else None
        limit = int(params.get("limit", "100"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    stage = params.get("stage") or None
    return Filters(
        task=params.get("task") or None,
        stage=stage,
        failed=params.get("failed") in ("1", "true"),
        since=since,
        limit=max(0, min(limit, 10_000)),
    )


def _deliveries(log_path: Path, filters: Filters, table: str = "callbacks") -> list[dict[str, Any]]:
    newest = None if filters.needs_everything else filters.limit
    return select(read_all(log_path, table, newest=newest), filters)


def _task_view(services: AdminServices, task_id: str) -> dict[str, Any]:
    deliveries = _deliveries(services.log_path, Filters(task=task_id))
    return {
        "task_id": task_id,
        "state": task_state(deliveries),
        "deliveries": deliveries,
        "alerts": mask_targets(services.alerts_for_task(task_id, [d["id"] for d in deliveries])),
        "forwards": services.forwards.for_task(task_id, [d["id"] for d in deliveries]) if services.forwards else [],
    }


def create_admin_app(services: AdminServices) -> Starlette:
    """Web page, JSON API, health and metrics, for the local listener only."""
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(mmss=mmss, titles=titles, mask_token=mask_token, plural=plural)

    async def index(request: Request) -> Response:
        filters = _filters(request)
        docs = list(reversed(_deliveries(services.log_path, filters)))
        return templates.TemplateResponse(
            request, "index.html", {"deliveries": docs, "filters": filters, "url": services.callback_url()}
        )

    async def task_page(request: Request) -> Response:
        view = _task_view(services, request.path_params["task_id"])
        if not view["deliveries"]:
            raise HTTPException(404, "no deliveries for this task")
        token = services.csrf.token(forward_web.replay_purpose(view["task_id"]))
        return templates.TemplateResponse(request, "task.html", {**view, "replay_token": token})

    async def api_callbacks(request: Request) -> Response:
        return JSONResponse({"callbacks": _deliveries(services.log_path, _filters(request))})

    async def api_rejected(request: Request) -> Response:
        return JSONResponse({"rejected": _deliveries(services.log_path, _filters(request), "rejected")})

    async def api_task(request: Request) -> Response:
        view = _task_view(services, request.path_params["task_id"])
        if not view["deliveries"]:
            raise HTTPException(404, "no deliveries for this task")
        return JSONResponse(view)

    async def api_url(request: Request) -> Response:
        url = services.callback_url()
        if url is None:
            return JSONResponse({"error": services.public_url_problem()}, status_code=503)
        return JSONResponse({"callback_url": url})

    async def healthz(request: Request) -> Response:
        healthy, detail = services.health()
        return JSONResponse(detail, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/tasks/{task_id}", task_page),
            Route("/api/callbacks", api_callbacks),
            Route("/api/rejected", api_rejected),
            Route("/api/tasks/{task_id}", api_task),
            Route("/api/url", api_url),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            *(forward_web.routes(services.forwards, services.csrf) if services.forwards else []),
        ],
        exception_handlers={HTTPException: _http_error},
    )
