"""Browser sessions of the setup page: cookie secrets, their CSRF tokens, and the limit
on failed pairing-link redemptions. No I/O.

A session is a 32-byte random secret in a cookie; the pairing store keeps only its
SHA-256 (``kind`` "web"), so the store file cannot be replayed as a cookie. The CSRF
token of a session is an HMAC of a fixed label under that secret: every form carries
it, and a page on another origin can neither read it nor compute it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "COOKIE_NAME",
    "RedeemLimiter",
    "Session",
    "cookie_header",
    "new_session",
    "parse_cookie",
]

COOKIE_NAME = "hearth_session"
_SECRET_SIZE = 32
_CSRF_LABEL = b"hearth setup csrf v1"


@dataclass(frozen=True)
class Session:
    secret: bytes

    def __repr__(self) -> str:  # never the secret in a log line or traceback
        return f"Session({self.key_hash.hex()[:16]}...)"

    @property
    def key_hash(self) -> bytes:
        """What the pairing store keeps and lists."""
        return hashlib.sha256(self.secret).digest()

    @property
    def cookie_value(self) -> str:
        return base64.urlsafe_b64encode(self.secret).decode().rstrip("=")

    @property
    def csrf(self) -> str:
        return hmac.new(self.secret, _CSRF_LABEL, hashlib.sha256).hexdigest()[:32]

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())


def new_session() -> Session:
    return Session(secrets.token_bytes(_SECRET_SIZE))


def parse_cookie(value: str | None) -> Session | None:
    """The session a cookie value names, or None for anything malformed."""
    if not value or len(value) != 43:
        return None
    try:
        secret = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        return None
    return Session(secret) if len(secret) == _SECRET_SIZE else None


def cookie_header(session: Session) -> str:
    """Set-Cookie: script-proof (HttpOnly), HTTPS only, never sent by another site."""
    return (f"{COOKIE_NAME}={session.cookie_value}; Path=/; HttpOnly; Secure; "
            "SameSite=Strict; Max-Age=31536000")


@dataclass
class RedeemLimiter:
    """At most ``limit`` failed redemptions per ``period`` seconds, box-wide; past that,
    every redemption (right or wrong) is refused until the oldest failure ages out.

    Box-wide rather than per address: a LAN attacker has as many addresses as it likes.
    The price is that such an attacker can delay pairing, never take it over."""

    limit: int = 10
    period: float = 60.0
    clock: Callable[[], float] = time.monotonic
    failures: deque[float] = field(default_factory=deque)

    def _expire(self) -> None:
        now = self.clock()
        while self.failures and now - self.failures[0] >= self.period:
            self.failures.popleft()

    def blocked(self) -> bool:
        self._expire()
        return len(self.failures) >= self.limit

    def failed(self) -> None:
        self.failures.append(self.clock())
