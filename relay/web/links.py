"""What the page may put in `href` and `src`, links to tasks whatever their ids hold, and the replay command."""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import quote

from relay.redact import mask_token


def safe_url(value: Any) -> str:
    """`value` when it is an http(s) URL or one of relay's own paths, else "" (never javascript:, data:, //host)."""
    if not isinstance(value, str):
        return ""
    if value.lower().startswith(("http://", "https://")) and not any(c in value for c in "\x00\r\n\t"):
        return value
    if value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return ""


def task_href(task_id: str) -> str:
    """The task page of `task_id`, with `/`, `%`, `?` and `#` quoted so the id stays one path segment.

    Browsers resolve a segment that is only dots (`.`, `..`, also spelt `%2e`) as a step up the path, however it
    is quoted, so those ids go in the query string instead.
    """
    quoted = quote(task_id.encode("utf-8", "surrogatepass"), safe="")  # any string JSON holds, "\ud800" too
    return f"/task?id={quoted}" if task_id.strip(".") == "" else f"/tasks/{quoted}"


def delivery_href(delivery_id: int) -> str:
    """The page of one delivery (for those without a task id)."""
    return f"/deliveries/{int(delivery_id)}"


def curl_command(callback_url: str, payload: Any, masked: bool = True) -> str:
    """A shell command that POSTs `payload` to relay's own public listener again, the token masked unless asked.

    The body is re-serialized compactly (ASCII-escaped, so any terminal pastes it intact); relay records it as a
    duplicate of the original delivery, which is what replaying locally should do.
    """
    url = mask_token(callback_url) if masked else callback_url
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return f"curl -sS -X POST -H 'Content-Type: application/json' --data-binary {shlex.quote(body)} {shlex.quote(url)}"
