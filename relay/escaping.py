"""Text from callbacks made safe to show: in a terminal, and as JSON (the CLI's output and the admin API).

A callback may hold any string JSON can: control characters that drive a terminal (ESC sequences, CSI as the
single character U+009B, CR and newlines that forge rows) and lone surrogates (`"\\ud800"`), which no UTF-8
output can encode. The log keeps them as they came; only what is shown is escaped, here, at the boundary (the web
page's templates have their own `finalize`, in relay/web/pages.py).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import starlette.responses

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0 controls, DEL and C1 controls (U+009B is a whole CSI by itself), and every surrogate code point: a string
# holding one that is not half of a pair cannot be encoded as UTF-8, and Python's str never holds pairs.
_TERMINAL = {
    **{c: _SHORT.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)},
}
# json.dumps already escapes C0, quotes and backslashes; what it leaves raw and a terminal (or UTF-8) cannot take.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\ud800-\udfff]")


def for_terminal(text: str) -> str:
    """`text` with every control character and lone surrogate shown as an escape (`\\x1b`, `\\n`, `\\ud800`)."""
    return text.translate(_TERMINAL)


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def escape_json(text: str) -> str:
    """JSON text (from any encoder with ensure_ascii=False) with DEL, C1 controls and lone surrogates escaped."""
    # Outside strings JSON is plain ASCII, so every match is inside a string, where an escape means the same.
    return _JSON_UNSAFE.sub(_unicode_escape, text)


def json_text(value: Any, **dumps: Any) -> str:
    """`json.dumps(value, ensure_ascii=False)` that a terminal and UTF-8 can take: DEL, C1 controls and lone
    surrogates become `\\uXXXX` escapes, so the text still parses to the same value."""
    return escape_json(json.dumps(value, ensure_ascii=False, **dumps))


class JSONResponse(starlette.responses.JSONResponse):
    """Starlette's JSONResponse for any string JSON can hold (its own raises UnicodeEncodeError on `\\ud800`)."""

    def render(self, content: Any) -> bytes:
        """Compact JSON, escaped as `json_text` does."""
        return json_text(content, allow_nan=False, separators=(",", ":")).encode("utf-8")


class EscapingFormatter(logging.Formatter):
    """Log lines carry request paths and callback text: control characters are escaped, so none can forge a
    line or drive the terminal `relay serve` runs in. Tracebacks keep their newlines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, escaped as `for_terminal` does."""
        return for_terminal(super().formatMessage(record))
