"""The two ASGI apps: the public one senders reach, and the local admin one people and scripts use (relay.web)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from relay.receiver import CallbackReceiver
from relay.web.app import create_admin_app, http_error
from relay.web.services import AdminServices

__all__ = ["AdminServices", "create_admin_app", "create_public_app"]


def create_public_app(receiver: CallbackReceiver) -> Starlette:
    """Only `POST /callback/{token}`; every other path is 404 and other methods 405."""
    app = Starlette(
        routes=[Route("/callback/{token}", receiver.handle, methods=["POST"])],
        exception_handlers={HTTPException: http_error},
    )
    # No redirects: Starlette would answer `/callback/<anything>/` with a 307 to a URL built from the Host header
    # (plain http behind a TLS tunnel), whatever the token.
    app.router.redirect_slashes = False
    return app
