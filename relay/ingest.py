"""From raw request bytes to a log document: strict JSON parsing with clear reasons, then extraction."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from relay.payloads import extract

#: Deeper than any provider body by far; deeper values could not be written back out by json.dumps.
MAX_DEPTH = 128


class BadBody(ValueError):
    """The body is not a JSON document relay can keep; the message is the reason given to the sender."""


def _reject_constant(name: str) -> Any:
    raise BadBody(f"{name} is not valid JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 is valid JSON but no double: it would come back as Infinity
        raise BadBody(f"number {text[:40]} is out of range (relay keeps numbers a double can hold)")
    return value


# Built once: parse_body() runs per request.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_body(raw: bytes) -> Any:
    """Parse a callback body as strict UTF-8 JSON, raising BadBody with a reason a sender can act on."""
    if not raw.strip():
        raise BadBody("empty body: expected a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBody(f"body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody(f"JSON nested too deeply (relay keeps up to {MAX_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # Python refuses integers of more than 4300 digits (CVE-2020-10735)
        raise BadBody(f"not a JSON value relay can keep: {exc}") from None
    # Counting brackets runs in C; only a body with enough of them can nest too deeply.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise BadBody(f"JSON nested too deeply (relay keeps up to {MAX_DEPTH} levels)")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(payload: Any) -> str:
    """Identifies a body regardless of key order and whitespace: the provider's retries share it."""
    canonical = _CANONICAL.encode(payload)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

#: The content type a delivery's body is assumed to have when the log does not say otherwise.
JSON_TYPE = "application/json"


def compact(payload: Any) -> str:
    """The payload as compact JSON, the way most senders serialize it (JSON.stringify, Jackson, Go)."""
    return _COMPACT.encode(payload)


def original_body(doc: Mapping[str, Any]) -> tuple[bytes, str]:
    """A delivery's body bytes and content type as the sender sent them (for forwarding).

    The log keeps the body as received only where re-serializing the parsed payload would not give it back
    (`payload_raw`: whitespace, key order of duplicates, escapes); otherwise the compact form is the body.
    """
    raw = doc.get("payload_raw")
    content_type = doc.get("content_type") or JSON_TYPE
    if isinstance(raw, str):
        return raw.encode("utf-8"), content_type
    try:
        return compact(doc.get("payload")).encode("utf-8"), content_type
    except UnicodeEncodeError:  # a lone surrogate, logged before relay kept raw bodies: escape it, stay valid
        return json.dumps(doc.get("payload"), separators=(",", ":")).encode("ascii"), content_type


def delivery_doc(
    payload: Any,
    received_at: str,
    size: int,
    public_host: str | None,
    raw: bytes | None = None,
    content_type: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The log document for an accepted callback: extracted fields plus the body exactly as received.

    With `raw`, the body text is kept too (`payload_raw`) when `compact(payload)` would not reproduce it, so a
    forward can send the sender's own bytes without doubling the log for the usual compact bodies. `kind` comes
    from the callback URL when relay submitted the task (`?kind=wav`): it beats guessing.
    """
    doc = {
        "received_at": received_at,
        **extract(payload, kind).as_fields(),
        "source": "callback",
        "public_host": public_host,
        "size": size,
        "fingerprint": fingerprint(payload),
        "payload": payload,
    }
    if raw is not None:
        text = raw.decode("utf-8")  # parse_body accepted it, so it is UTF-8
        if text != compact(payload):
            doc["payload_raw"] = text
    if content_type and content_type.strip().lower() != JSON_TYPE:
        doc["content_type"] = content_type
    return doc


def rejected_doc(
    raw: bytes,
    reason: str,
    status: int,
    received_at: str,
    public_host: str | None,
    truncated: bool = False,
    received: int | None = None,
    declared: int | None = None,
) -> dict[str, Any]:
    """The log document for a refused request, keeping its bytes (as text, or base64 when not UTF-8).

    `size` is what is known of the body's size: the bytes received (`received`, which may be more than were kept),
    or the Content-Length it declared (`declared`) when that is larger.
    """
    received = len(raw) if received is None else received
    doc: dict[str, Any] = {
        "received_at": received_at,
        "reason": reason,
        "status": status,
        "size": max(received, declared or 0),
        "received": received,
        "declared": declared,
        "truncated": truncated,
        "public_host": public_host,
    }
    try:
        doc["body"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        doc["body_base64"] = base64.b64encode(raw).decode("ascii")
    return doc
