"""Keeping other web sites from making the user's browser POST to the admin listener.

Two independent checks for a form on relay's page: the request must come from relay's own origin (`Origin`, else
`Referer`, matching `Host`; `Sec-Fetch-Site` when the browser sends it), and it must carry a token only relay's
page can know: an HMAC, under a key made fresh by each relay process, of what the form does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers


class CsrfTokens:
    """Tokens for page forms; they stop working when relay restarts (a reload of the page gets a fresh one)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def token(self, purpose: str) -> str:
        """The token a form doing `purpose` (e.g. `replay:<task id>`) must carry."""
        digest = hmac.new(self._key, purpose.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def valid(self, purpose: str, candidate: str | None) -> bool:
        """Whether `candidate` is the token for `purpose` (constant time)."""
        return bool(candidate) and hmac.compare_digest(
            self.token(purpose).encode(), str(candidate).encode("utf-8", "surrogatepass")
        )


def same_origin(headers: Headers, required: bool = True) -> bool:
    """Whether a request comes from a page of relay's own origin.

    With `required`, a request that names no origin at all (no `Origin`, no `Referer`) is refused, as a browser
    always sends one of them with a form POST; without it (scripts, the CLI) only a foreign origin is refused.
    """
    host = (headers.get("host") or "").lower()
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    named = headers.get("origin") or headers.get("referer")
    if not named or named == "null":
        return not required and named is None
    return bool(host) and urlsplit(named).netloc.lower() == host
