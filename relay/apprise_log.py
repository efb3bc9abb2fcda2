"""Why an Apprise target failed: the lines Apprise logs during one notify, captured for the calling thread only.

Apprise's `notify()` returns only True or False; the reason (`535 Authentication credentials invalid`, a refused
connection, a read timeout) goes to its `apprise` logger. Sends to several targets run at once in worker threads,
so a filter on that logger hands each record to the thread that is sending, if it asked for them. The same filter
scrubs the target's secrets (an ntfy topic in the URL Apprise logs) from every record logged during a send, so they
reach neither the reason nor relay's own log.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator

from relay.redact import scrub_url_secrets

_local = threading.local()
#: Apprise's debug lines that hold the detail behind a warning (the socket error, the server's answer).
_DETAIL = ("Socket Exception", "Response Details")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
_SMTP = re.compile(r"\((\d{3}), b['\"](.+?)['\"]\)")
_MAX = 300


class _Capture(logging.Filter):
    """Collects a sending thread's records; lets through only what the `apprise` logger let through before."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level  # the logger's own level before relay lowered it to DEBUG (0: inherit)

    def filter(self, record: logging.LogRecord) -> bool:
        """Record for the capturing thread (scrubbed), and pass on records the old level allowed."""
        capture: tuple[list[tuple[int, str]], list[str]] | None = getattr(_local, "capture", None)
        if capture is not None:
            lines, secrets = capture
            text = scrub_url_secrets(record.getMessage(), secrets)
            record.msg, record.args = text, None
            if record.levelno >= logging.WARNING or text.startswith(_DETAIL):
                lines.append((record.levelno, text))
        threshold = self.level or logging.getLogger().getEffectiveLevel()
        return record.levelno >= threshold


def install() -> None:
    """Let `apprise` log at DEBUG into the capture filter (once per process); what passes on is unchanged."""
    apprise_logger = logging.getLogger("apprise")
    if any(isinstance(f, _Capture) for f in apprise_logger.filters):
        return
    apprise_logger.addFilter(_Capture(apprise_logger.level))
    apprise_logger.setLevel(logging.DEBUG)


@contextlib.contextmanager
def capturing(secrets: list[str]) -> Iterator[list[tuple[int, str]]]:
    """Within the block, this thread's Apprise records (scrubbed of `secrets`) are appended to the list."""
    install()
    lines: list[tuple[int, str]] = []
    _local.capture = (lines, secrets)
    try:
        yield lines
    finally:
        _local.capture = None


def reason(lines: list[tuple[int, str]]) -> str | None:
    """One line saying why a send failed: Apprise's warnings and the detail behind them, or None."""
    said: list[str] = []
    details: list[str] = []
    for level, text in lines:
        if text.startswith(_DETAIL):
            detail = _condense(text)
            if detail and detail not in details and detail not in ("b''", 'b""'):
                details.append(detail)
        elif level >= logging.WARNING:
            line = " ".join(text.split()).rstrip(".")
            if line not in said:
                said.append(line)
    if not said and not details:
        return None
    text = "; ".join(said) if said else "failed"
    if details:
        text += f" ({'; '.join(details)})"
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"


def _condense(text: str) -> str:
    """The useful part of a detail line: `Connection refused`, `535 5.7.8 Authentication credentials invalid`."""
    body = text.split(":", 1)[1].strip() if ":" in text else ""
    if match := _SMTP.search(body):
        return f"{match[1]} {match[2]}"
    if match := _ERRNO.search(body):
        return match[1].strip()
    if "Read timed out" in body:
        return "read timed out"
    if "timed out" in body:
        return "timed out"
    return " ".join(body.split())[:120]
