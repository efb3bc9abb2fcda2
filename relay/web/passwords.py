"""Password hashes for the admin listener's basic auth: scrypt from the standard library, self-describing strings.

A hash reads `scrypt$<n>$<r>$<p>$<salt>$<key>` (salt and key in unpadded base64url), so its cost can be raised
later without breaking hashes already in config files. scrypt is memory-hard, which is what slows guessing on GPUs;
`relay hash-password` makes one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
#: 32 MiB and ~0.1 s per hash on a small machine; relay checks a password once per connection at most (see guard).
N, R, P = 2**15, 8, 1
_MAXMEM = 256 * 1024 * 1024
_KEY_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """A fresh salted scrypt hash of `password`, for `admin.password_hash`."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_KEY_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("is not a hash made by `relay hash-password` (scrypt$n$r$p$salt$key)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ValueError("is not a hash made by `relay hash-password` (bad number or base64)") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or len(salt) < 8 or len(key) < 16:
        raise ValueError("has scrypt parameters relay does not accept (make a new one with `relay hash-password`)")
    return n, r, p, salt, key


def check_hash(stored: str) -> None:
    """Raise ValueError saying why `stored` is not a usable hash."""
    _parse(stored)


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` matches `stored` (constant-time comparison; a malformed hash matches nothing)."""
    try:
        n, r, p, salt, key = _parse(stored)
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(key))
    return hmac.compare_digest(candidate, key)
