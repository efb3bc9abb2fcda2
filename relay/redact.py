"""Keeping secrets out of logs, CLI output and error messages."""

from __future__ import annotations

import logging
import re

_CALLBACK_PATH = re.compile(r"(/callback/)[^/\s?\"']+")
MASK = "****"


def mask_token(url: str | None) -> str:
    """A callback URL with its token segment masked: `https://x/callback/****`."""
    return _CALLBACK_PATH.sub(rf"\g<1>{MASK}", url or "")


class RedactingFilter(logging.Filter):
    """Masks callback tokens (and any other registered secret) in every record that passes through."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = [s for s in secrets or [] if s]

    def add(self, secret: str) -> None:
        """Also mask `secret` from now on."""
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def scrub(self, text: str) -> str:
        """`text` with every secret masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _CALLBACK_PATH.sub(rf"\g<1>{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, scrubbed, so arguments cannot reintroduce a secret."""
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.msg, record.args = scrubbed, None
        return True
