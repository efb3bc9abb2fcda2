"""The admin API's watch and poll endpoints: how the CLI asks the running relay, the one writer of its files.

- `GET /api/watch`: the watched tasks (`watched`), and why polling stopped (`stopped`, or null);
- `POST /api/watch` with `{"task_id", "kind", "source", "operation"}`: watch a task; answers `{"watched": row}`;
- `POST /api/poll/{task_id}` with `{"kind"}` (optional): poll now and record the answer.

POSTs must say `Content-Type: application/json`: a web page cannot send that cross-origin without a preflight
the admin app never grants, so a page in the user's browser cannot make relay spend provider requests.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relay.errors import StoreError
from relay.provider.client import ProviderError
from relay.provider.watchdog import Watchdog

_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


class BadRequest(ValueError):
    """The request cannot be served as sent; the message says why."""


async def _body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequest("send Content-Type: application/json")
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _task_id(value: Any) -> str:
    if not isinstance(value, str) or not _TASK_ID.fullmatch(value):
        raise BadRequest(f"not a task id: {str(value)[:60]!r} (letters, digits and . _ : - only)")
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value or None


def routes(watchdog: Watchdog) -> list[BaseRoute]:
    """The routes, bound to the running watchdog."""

    async def list_watched(request: Request) -> Response:
        return JSONResponse({"watched": watchdog.watchlist.rows(), "stopped": watchdog.stopped})

    async def watch(request: Request) -> Response:
        try:
            body = await _body(request)
            row = await watchdog.watch(
                _task_id(body.get("task_id")),
                _text(body, "kind") or "music",
                source=_text(body, "source") or "watch",
                operation=_text(body, "operation"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except StoreError as exc:
            return JSONResponse({"error": f"cannot record the watch: {exc}"}, status_code=503)
        return JSONResponse({"watched": row})

    async def poll(request: Request) -> Response:
        try:
            body = await _body(request)
            result = await watchdog.poll_now(_task_id(request.path_params["task_id"]), _text(body, "kind"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ProviderError as exc:
            return JSONResponse({"error": str(exc), "code": exc.code}, status_code=502)
        except StoreError as exc:
            return JSONResponse({"error": f"cannot record the answer: {exc}"}, status_code=503)
        return JSONResponse(result)

    return [
        Route("/api/watch", list_watched, methods=["GET"]),
        Route("/api/watch", watch, methods=["POST"]),
        Route("/api/poll/{task_id}", poll, methods=["POST"]),
    ]
