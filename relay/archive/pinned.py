"""HTTP/1.1 connections to an address checked beforehand, speaking to the host by name (stdlib http.client).

The socket goes to the address the SSRF check approved (no second DNS lookup); the Host header, TLS SNI and the
certificate check use the name. Reading the body with `read1` hands over what each receive brought, without
copying it through a parser's buffers: at loopback speed the copies, not the network, are what costs.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from relay.archive.addresses import Target

READ_BYTES = 1 << 20


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Pinned(http.client.HTTPConnection):
    """Plain HTTP to `address`."""

    def __init__(self, target: Target, address: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=connect_timeout)
        self._target = target
        self._address = address
        self._read_timeout = read_timeout

    def connect(self) -> None:
        """Connect to the checked address, then allow `read_timeout` between reads."""
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self._read_timeout)


class _PinnedTLS(_Pinned):
    """HTTPS to `address`, verifying the certificate for the name."""

    def connect(self) -> None:
        """TLS over the pinned connection, SNI and verification by the host name."""
        super().connect()
        self.sock = _ssl_context().wrap_socket(self.sock, server_hostname=self._target.host)


@dataclass
class Answer:
    """Status, headers (lowercase names) and the body as it arrives."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    url: str


class NetworkError(Exception):
    """Connecting or reading failed: refused, reset, timed out, TLS, or not HTTP the client understands."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response: {type(exc).__name__}"
    return f"network error: {getattr(exc, 'strerror', None) or exc}"


@contextlib.contextmanager
def get(target: Target, address: str, headers: dict[str, str], timeouts: tuple[float, float]) -> Iterator[Answer]:
    """GET `target` from `address`; the connection is closed when the block ends."""
    kind = _PinnedTLS if target.scheme == "https" else _Pinned
    conn = kind(target, address, *timeouts)
    try:
        sent = {"Host": target.host_header, "User-Agent": "relay", "Accept-Encoding": "identity", **headers}
        try:
            conn.request("GET", target.target, headers=sent)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(_describe(exc)) from None
        received = {name.lower(): value for name, value in response.getheaders()}
        yield Answer(response.status, received, _body(response), target.url)
    finally:
        conn.close()


def _body(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read1(READ_BYTES)
        except (OSError, http.client.HTTPException) as exc:  # IncompleteRead: the server hung up mid-body
            raise NetworkError(_describe(exc)) from None
        if not chunk:
            # read1 ends quietly when the server hangs up early; a short body must never pass for a whole one.
            if response.length:
                raise NetworkError(f"bad HTTP response: the connection closed {response.length} bytes short")
            return
        yield chunk
