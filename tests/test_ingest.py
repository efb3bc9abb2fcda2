"""Parsing a body without losing any of it: what a parsed value cannot hold is kept as the body's text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.ingest import delivery_doc, parse_body

#: name: (a body no parsed value holds in full, the parsed value)
LOSSY: dict[str, tuple[bytes, Any]] = {
    "repeated-key": (b'{"a":1,"a":2}', {"a": 2}),
    "nested-repeated-key": (b'{"data":[{"id":"x","id":"y"}]}', {"data": [{"id": "y"}]}),
    "more-digits-than-a-double": (b'{"d":0.10000000000000000555}', {"d": 0.1}),
    "underflow": (b'{"d":1e-400}', {"d": 0.0}),
}


@pytest.mark.parametrize(("raw", "value"), list(LOSSY.values()), ids=list(LOSSY))
def test_what_parsing_would_lose_is_kept_verbatim(raw: bytes, value: Any) -> None:
    """Repeated keys (the last one wins in `payload`) and numbers a double cannot hold: accepted, and the body's
    text is kept as `payload_raw` (relay never refuses a callback for its shape)."""
    payload = parse_body(raw)
    assert payload == value
    doc = delivery_doc(payload, "2026-01-01T00:00:00.000Z", len(raw), None, raw)
    assert doc["payload"] == value
    assert doc["payload_raw"] == raw.decode()
    assert json.loads(json.dumps(doc))["payload_raw"] == raw.decode()  # as the log gives it back
