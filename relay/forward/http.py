"""One HTTP forward attempt: POST the original body to a target, signed when it has a secret."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import httpx

from relay.config import ForwardTarget
from relay.forward import signing
from relay.ingest import original_body
from relay.jobs import Attempt

USER_AGENT = f"relay/{version('relay')}"


def request_headers(
    target: ForwardTarget, delivery: Mapping[str, Any], msg_id: str, body: bytes, content_type: str, replay: bool
) -> dict[str, str]:
    """Headers of one attempt: content type as received, Standard Webhooks headers, and relay's own."""
    out = {
        "content-type": content_type,
        "user-agent": USER_AGENT,
        "relay-delivery-id": str(delivery.get("id")),
        **signing.headers(target.secret_key or None, msg_id, body),
    }
    if replay:
        out["relay-replay"] = "1"
    return out


async def post(
    client: httpx.AsyncClient, target: ForwardTarget, delivery: Mapping[str, Any], msg_id: str, replay: bool
) -> Attempt:
    """POST the delivery's body; any 2xx is done, anything else is retried with the queue's backoff."""
    if urlsplit(target.url).scheme not in ("http", "https"):  # config refuses these; never send elsewhere
        return Attempt(False, "only http and https targets are allowed", retry=False)
    body, content_type = original_body(delivery)
    headers = request_headers(target, delivery, msg_id, body, content_type, replay)
    try:
        response = await client.post(target.url, content=body, headers=headers, timeout=target.timeout)
    except httpx.TimeoutException:
        return Attempt(False, f"no answer within {target.timeout:g} s", result={"status": None})
    except httpx.HTTPError as exc:
        return Attempt(False, _reason(exc, target.url), result={"status": None})
    result = {"status": response.status_code, "webhook_id": msg_id}
    if 200 <= response.status_code < 300:
        return Attempt(True, result=result)
    return Attempt(False, f"HTTP {response.status_code}", result=result)


def _reason(exc: httpx.HTTPError, url: str) -> str:
    """What went wrong, without the URL: a target URL may hold a secret (a Home Assistant webhook id)."""
    text = str(exc).replace(url, "****")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
