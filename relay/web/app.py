"""The admin ASGI app: routes, the guard in front of them, and the static files the page uses."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.archive import web as archive_web
from relay.escaping import JSONResponse
from relay.forward import web as forward_web
from relay.web.api import Api
from relay.web.board import Board
from relay.web.guard import AdminGuard
from relay.web.pages import Pages
from relay.web.services import AdminServices

STATIC = Path(__file__).with_name("static")


async def http_error(request: Request, exc: Exception) -> Response:
    """HTTP errors as `{"error": ...}`."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_admin_app(services: AdminServices) -> Starlette:
    """Web page, JSON API, events, health and metrics, for the local listener only."""
    board = Board(services)
    pages, api = Pages(services, board), Api(services, board)
    admin = services.settings
    return Starlette(
        routes=[
            Route("/", pages.index),
            Route("/tasks/{task_id:path}", pages.task),
            Route("/task", pages.task),  # ids that are only dots (see links.task_href)
            Route("/deliveries/{delivery_id:int}", pages.task),
            Route("/rejected", pages.rejected),
            Route("/partials/card", pages.card_fragment),
            Route("/partials/task", pages.task_fragment),
            Route("/partials/overview", pages.overview),
            Route("/events", api.events),
            Route("/api/callbacks", api.callbacks),
            Route("/api/rejected", api.rejected),
            Route("/api/tasks/{task_id:path}", api.task),
            Route("/api/deliveries/{delivery_id:int}/curl", api.curl),
            Route("/api/url", api.url),
            Route("/healthz", api.healthz),
            Route("/metrics", api.metrics),
            *(forward_web.routes(services.forwards, services.csrf) if services.forwards else []),
            *(archive_web.routes(services.archive) if services.archive else []),
            *services.extra_routes,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(AdminGuard, allowed_hosts=admin.allowed_hosts, own_hosts=[admin.host], auth=admin.auth),
        ],
        exception_handlers={HTTPException: http_error},
    )
