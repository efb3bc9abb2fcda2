"""Which URLs relay may fetch for a payload: pure parsing and address rules, the SSRF policy in one place.

A payload is written by someone on the internet; its links must not aim relay at the machine it runs on or at the
home network behind it. So only `http`/`https`, and the host's addresses (every spelling of them: decimal, hex and
octal IPv4, IPv4-mapped and -embedded IPv6) must all be public. See ../shared/CONTRACT.md, "Files: keeping the music".
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses it resolves to. Injected in tests; the default asks the system resolver.
Resolver = Callable[[str, int], list[IPAddress]]
#: An address -> why it may not be fetched from, or None when it may.
Policy = Callable[[IPAddress], "str | None"]

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class Refused(Exception):
    """A URL relay will not fetch: the reason says why (never retried: the answer would be the same)."""


@dataclass(frozen=True)
class Target:
    """One URL taken apart: what to connect to, and what to say in the request line and Host header."""

    url: str
    scheme: str
    host: str  # a DNS name (IDNA, lowercase) or an IP literal without brackets
    port: int
    target: str  # path and query, percent-encoded
    literal: IPAddress | None

    @property
    def host_header(self) -> str:
        """The Host header: the name as written, with the port unless it is the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str) -> Target:
    """Take a URL apart, refusing anything but plain http(s) URLs with a host."""
    if any(ord(c) < 33 or c in "\\" for c in url):
        raise Refused("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are fetched, not {scheme or 'a relative URL'!r}")
    if "@" in parts.netloc:
        raise Refused("URLs with a user name or password are not fetched")
    host = (parts.hostname or "").rstrip(".") if not parts.netloc.startswith("[") else parts.hostname or ""
    if not host:
        raise Refused("the URL has no host")
    literal = _literal(host, bracketed=parts.netloc.startswith("["))
    if literal is None:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise Refused(f"{host!r} is not a valid host name") from None
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
            raise Refused(f"{host!r} is not a valid host name")
    else:
        host = str(literal)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    query = f"?{quote(parts.query, safe=_PATH_SAFE + '?')}" if parts.query else ""
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), path + query, literal)


def _literal(host: str, *, bracketed: bool) -> IPAddress | None:
    """The address a host names directly, in any spelling a resolver would accept, or None for a DNS name."""
    if bracketed:
        if "%" in host:
            raise Refused("IPv6 zone identifiers are not fetched")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise Refused(f"{host!r} is not an IPv6 address") from None
    if re.fullmatch(r"[0-9a-fx.]+", host, re.IGNORECASE) and re.search(r"\d", host):
        # inet_aton takes what resolvers take: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            if re.fullmatch(r"[0-9.x]+", host, re.IGNORECASE):
                raise Refused(f"{host!r} is not a valid IPv4 address") from None
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why relay may not connect to `address` for a payload (loopback, private, ...), or None if it is public."""
    for embedded in _embedded(address):
        reason = forbidden_reason(embedded)
        if reason:
            return reason
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    return None if address.is_global else "non-public"


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): they reach the IPv4 host."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.append(address.teredo[1])
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    seen: dict[IPAddress, None] = {}
    for info in infos:
        text = str(info[4][0]).split("%")[0]
        seen[ipaddress.ip_address(text)] = None
    return list(seen)


def check(target: Target, *, allow_private: bool, resolve: Resolver, policy: Policy) -> IPAddress:
    """The one address to connect to for `target`: resolved once, and every address the name has is checked."""
    addresses = [target.literal] if target.literal is not None else resolve(target.host, target.port)
    if not addresses:
        raise OSError(f"cannot resolve {target.host}: no addresses")
    if not allow_private:
        for address in addresses:
            reason = policy(address)
            if reason:
                where = target.host if target.literal is not None else f"{target.host} resolves to {address}, which"
                raise Refused(f"{where} is a {reason} address (archive.allow_private is false)")
    return addresses[0]
