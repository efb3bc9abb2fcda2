"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver verifies a forward with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers(key: bytes | None, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The `webhook-*` headers for one attempt; signed when there is a key.

    The timestamp is the attempt's own (receivers refuse ones more than five minutes off), the id is the message's,
    the same on every retry so a receiver can drop what it already handled.
    """
    timestamp = int(time.time() if now is None else now)
    out = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if key:
        out["webhook-signature"] = signature(key, msg_id, timestamp, body)
    return out
