"""The admin listener's replay endpoints: `POST /api/replay` for the CLI, `POST /replay` for the task page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.csrf import CsrfTokens, same_origin
from relay.escaping import JSONResponse
from relay.forward.service import Forwards, ReplayError
from relay.web.links import task_href

#: A replay form or request body is a few fields; nothing bigger is read.
MAX_FORM_BYTES = 16_384


def replay_purpose(task_id: str) -> str:
    """What the task page's replay token is bound to."""
    return f"replay:{task_id}"


def routes(forwards: Forwards, tokens: CsrfTokens) -> list[Route]:
    """The replay routes of the admin app."""

    async def api_replay(request: Request) -> Response:
        # A cross-site page cannot send application/json without a CORS preflight, which relay never grants.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send the request as application/json"}, status_code=415)
        if not same_origin(request.headers, required=False):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        try:
            delivery_id, task_id, to, alerts = _replay_request(await _read_json(request))
            result = await forwards.replay(delivery_id, task_id, to, alerts)
        except ReplayError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse(result)

    async def page_replay(request: Request) -> Response:
        if not same_origin(request.headers, required=True):
            return JSONResponse({"error": "cross-site request refused"}, status_code=403)
        try:
            raw = await _read(request)
            form = {key: values[0] for key, values in parse_qs(raw.decode("utf-8", "replace")).items()}
            task_id = form.get("task_id", "")
            if not task_id or not tokens.valid(replay_purpose(task_id), form.get("token")):
                return JSONResponse({"error": "missing or stale form token: reload the page"}, status_code=403)
            result = await forwards.replay(task_id=task_id, alerts=form.get("alerts") == "1")
        except ReplayError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        queued = len(result["forwards"]) + len(result["alerts"])
        page = task_href(task_id)  # ids that are only dots need the query form
        return RedirectResponse(f"{page}{'&' if '?' in page else '?'}replayed={queued}", status_code=303)

    return [
        Route("/api/replay", api_replay, methods=["POST"]),
        Route("/replay", page_replay, methods=["POST"]),
    ]


def _replay_request(body: dict[str, Any]) -> tuple[int | None, str | None, list[str], bool]:
    """The fields of a `POST /api/replay` body, checked."""
    delivery_id, task_id, to = body.get("delivery_id"), body.get("task_id"), body.get("to") or []
    if not (delivery_id is None or (isinstance(delivery_id, int) and not isinstance(delivery_id, bool))):
        raise ReplayError("delivery_id must be an integer")
    if not (task_id is None or isinstance(task_id, str)):
        raise ReplayError("task_id must be a string")
    if not isinstance(to, list) or not all(isinstance(name, str) for name in to):
        raise ReplayError("to must be a list of forward target names")
    return delivery_id, task_id, to, bool(body.get("alerts"))


async def _read(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ReplayError("request body too large", status=413)
    return body


async def _read_json(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await _read(request))
    except (ValueError, UnicodeDecodeError):
        raise ReplayError("the body is not JSON") from None
    if not isinstance(value, dict):
        raise ReplayError("the body must be a JSON object")
    return value
