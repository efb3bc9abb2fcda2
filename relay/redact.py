"""Keeping secrets out of logs, CLI output and error messages."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

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


# -- target URLs ----------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?(.*)$", re.S)
_SHORTENED = re.compile(r"^(.\.\.\..|\*{3,4})$", re.S)
_HOSTNAME = re.compile(r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\.?|\[[0-9A-Fa-f:.]+\])$")


def shorten(part: str) -> str:
    """A secret-bearing piece of a URL cut to its first and last character: `my-topic` -> `m...c`."""
    if _SHORTENED.match(part):  # already shown masked (a label stored by an earlier relay)
        return part
    return f"{part[0]}...{part[-1]}" if len(part) >= 6 else "***"


def mask_url(url: str) -> str:
    """A target URL as relay shows it: scheme and host readable, everything that can be a secret shortened.

    Users, passwords, path segments, query values and fragments can all be secrets (an ntfy topic, a webhook
    token in a path), so each is shortened; a "host" that is not a host name (Telegram's bot token, a bare ntfy
    topic) is shortened too. `ntfy://ntfy.sh/my-topic` -> `ntfy://ntfy.sh/m...c`.
    """
    return _split_url(url.strip())[0]


def url_secrets(url: str) -> list[str]:
    """The pieces `mask_url` hides, longest first, so text that quotes them (Apprise's log lines) can be scrubbed."""
    return _split_url(url.strip())[1]


def scrub_url_secrets(text: str, secrets: list[str]) -> str:
    """`text` with each piece of `secrets` replaced by its shortened form."""
    for secret in secrets:
        text = text.replace(secret, shorten(secret))
    return text


def _split_url(url: str) -> tuple[str, list[str]]:
    secrets: list[str] = []

    def hide(part: str) -> str:
        if not part:
            return part
        secrets.append(part)
        return shorten(part)

    match = _SCHEME.match(url)
    if match is None:
        return hide(url), _longest_first(secrets)
    scheme, slashes, rest = match[1], match[2], match[3]
    rest, hash_mark, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if slashes:
        netloc, slash, path = rest.partition("/")
    else:  # "ntfy:/ntfy.sh/topic", a typo: no authority, everything is path
        netloc, slash, path = "", "", rest
    userinfo, at, hostport = netloc.rpartition("@")
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if password:
            secrets.append(password)
        userinfo = hide(user) + (":****" if colon else "")
    host, port = hostport, ""
    if ":" in hostport and not hostport.endswith("]"):
        host, _, port = hostport.rpartition(":")
        if not port.isdigit():  # "bot123:ABC" is a token, not host and port
            host, port = hostport, ""
    shown_host = host if _HOSTNAME.match(host) or _is_ip(host) else hide(host)
    netloc = f"{userinfo}{at}{shown_host}" + (f":{port}" if port else "")
    path = "/".join(hide(segment) for segment in path.split("/"))
    pairs = []
    for pair in query.split("&") if query else []:
        key, equals, value = pair.partition("=")
        pairs.append(f"{key}{equals}{hide(value)}")
    masked = f"{scheme}:{slashes or ''}{netloc}{slash}{path}{question}{'&'.join(pairs)}{hash_mark}{hide(fragment)}"
    return masked, _longest_first(secrets)


def _is_ip(host: str) -> bool:
    return bool(host) and all(part.isdigit() for part in host.split(".")) and host.count(".") == 3


def _longest_first(parts: list[str]) -> list[str]:
    unique = {p for p in parts if len(p) >= 3}
    unique |= {unquote(p) for p in unique}
    return sorted(unique, key=len, reverse=True)
