"""When a new client may pair, and with which single-use token.

Open at first boot until the first client pairs (no expiry), and for 5 minutes after a
short button press (or ``appliance pairing open``); closed otherwise. A reset (long
press) revokes everything, rotates the token and reopens the window like first boot.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["DEFAULT_WINDOW_S", "PairingWindow"]

DEFAULT_WINDOW_S = 300.0
TOKEN_SIZE = 8  # 64 bits: guessing within a 5-minute window is hopeless


class PairingWindow:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.expires_at: float | None = None
        self.is_open_flag = False

    @property
    def is_open(self) -> bool:
        if not self.is_open_flag:
            return False
        if self.expires_at is not None and self._clock() >= self.expires_at:
            self.close()
            return False
        return True

    def seconds_left(self) -> float | None:
        if not self.is_open or self.expires_at is None:
            return None
        return max(0.0, self.expires_at - self._clock())

    def open(self, duration: float | None = DEFAULT_WINDOW_S) -> None:
        """Open with a fresh token; ``duration`` None means until a client pairs."""
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.expires_at = None if duration is None else self._clock() + duration
        self.is_open_flag = True

    def close(self) -> None:
        self.is_open_flag = False
        self.expires_at = None
        self.token = secrets.token_bytes(TOKEN_SIZE)  # a seen token is never valid again

    def redeem(self, token: bytes) -> bool:
        """True once for the valid token while open; the window then closes."""
        if not self.is_open or not hmac.compare_digest(token, self.token):
            return False
        self.close()
        return True
