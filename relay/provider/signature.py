"""kie.ai's signed callbacks: `X-Webhook-Signature` = base64(HMAC-SHA256(key, taskId + "." + timestamp)).

PROVIDER_API.md, "Signed callbacks". Compared in constant time; a timestamp more than `MAX_AGE` seconds away from
now (either way) is refused, so a captured callback cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from relay.payloads import as_int, as_text

MAX_AGE = 300.0


def sign(key: str, task_id: str, timestamp: str) -> str:
    """The signature the provider sends for `task_id` at `timestamp` (Unix seconds, as sent)."""
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_task_id(payload: Any) -> str | None:
    """The taskId the signature covers: `data.task_id` in kie.ai's sample, else the other spellings."""
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    for source in (data, payload):
        if isinstance(source, dict):
            for name in ("task_id", "taskId"):
                value = as_text(source.get(name))
                if value:
                    return value
    return None


def problem(key: str, payload: Any, timestamp: str | None, signature: str | None, now: float) -> str | None:
    """Why a callback's signature is not acceptable, or None when it is valid and fresh."""
    if not signature or not timestamp:
        return "missing X-Webhook-Signature or X-Webhook-Timestamp header"
    sent_at = as_int(timestamp.strip())
    if sent_at is None:
        return "X-Webhook-Timestamp is not a Unix time in seconds"
    if abs(now - sent_at) > MAX_AGE:
        return f"stale signature: X-Webhook-Timestamp is {abs(now - sent_at):.0f} s from now (limit {MAX_AGE:.0f} s)"
    task_id = signed_task_id(payload)
    if task_id is None:
        return "the body has no taskId to check the signature against"
    expected = sign(key, task_id, timestamp.strip())
    if not hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "surrogateescape")):
        return "wrong X-Webhook-Signature"
    return None
