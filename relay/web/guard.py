"""In front of every admin route: the Host allow-list, optional basic auth, and the security headers.

The Host check is what stops DNS rebinding: a web page in the user's browser can point a name it controls at
127.0.0.1, but the browser still sends that name as Host, and relay answers 421. Requests that change something
must also come from relay's own page (an `Origin` header, when sent, must name an allowed host).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.web.passwords import verify_password

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https:; "
    "media-src 'self' http: https:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # task ids in admin URLs are nobody else's business
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
#: Answered without credentials: liveness probes (it shows no token and no log contents).
OPEN_PATHS = frozenset({"/healthz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(header: str) -> str:
    """The name in a Host (or Origin netloc) header, without port or IPv6 brackets, lowercased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, own: Iterable[str], allowed: Iterable[str]) -> bool:
    """Whether a request's Host names this listener: its own address, `localhost`, or a configured name."""
    if not header:
        return False
    name = host_name(header)
    return name in {"localhost", *own, *allowed}


class AdminGuard:
    """ASGI middleware: refuse foreign Host/Origin (421/403), ask for credentials (401), add security headers."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str] = (),
        own_hosts: Iterable[str] = (),
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed_hosts)
        self.own = frozenset(h.lower().strip("[]") for h in own_hosts if h not in ("", "0.0.0.0", "::"))
        self.auth = auth
        # Checked credentials, as keyed digests: scrypt runs once per browser session, not per request.
        self._key = secrets.token_bytes(32)
        self._good: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        server = scope.get("server") or ("", 0)
        own = {*self.own, str(server[0]).lower()}
        if not host_allowed(headers.get("host"), own, self.allowed):
            await _plain(
                send,
                421,
                "421 misdirected request: this host name is not one relay's admin answers to "
                "(add it to admin.allowed_hosts)",
            )
            return
        origin = headers.get("origin")
        foreign = origin is not None and not host_allowed(urlsplit(origin).netloc, own, self.allowed)
        if scope["method"] not in SAFE_METHODS and foreign:
            await _plain(send, 403, "403 forbidden: a request from another site")
            return
        needs_auth = self.auth is not None and scope["path"] not in OPEN_PATHS
        if needs_auth and not await self._authorized(headers.get("authorization")):
            await _plain(
                send,
                401,
                "401 unauthorized: relay's admin asks for admin.username and its password",
                [(b"www-authenticate", b'Basic realm="relay", charset="UTF-8"')],
            )
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _authorized(self, header: str | None) -> bool:
        assert self.auth is not None
        if not header or not header.lower().startswith("basic "):
            return False
        digest = hmac.new(self._key, header.encode("latin-1"), hashlib.sha256).digest()
        if digest in self._good:
            return True
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, stored = self.auth
        same_user = hmac.compare_digest(user.encode(), username.encode())
        # scrypt in a thread: ~0.1 s that must not stall the loop the callbacks share
        good = await asyncio.to_thread(verify_password, stored, password) and same_user
        if good:
            if len(self._good) > 64:
                self._good.clear()
            self._good.add(digest)
        return good


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
