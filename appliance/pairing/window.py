"""When a new client may pair, and with which single-use tokens.

Open at first boot until the first client pairs (no expiry), and for 5 minutes after a
short button press (or ``appliance pairing open``); closed otherwise. A reset (long
press) revokes everything, rotates the tokens and reopens the window like first boot.

An open window has two tokens: one in the Noise pairing code (desktops) and one in the
setup page's URL (phones, the OLED QR). Either pairs one device and closes the window:
one press, one pairing.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["DEFAULT_WINDOW_S", "PairingWindow", "decode_web_token", "encode_web_token"]

DEFAULT_WINDOW_S = 300.0
TOKEN_SIZE = 8  # 64 bits: guessing within a 5-minute window is hopeless


def encode_web_token(token: bytes) -> str:
    """The URL form: Base32 upper case without padding (13 characters, QR alphanumeric)."""
    return base64.b32encode(token).decode().rstrip("=")


def decode_web_token(text: str) -> bytes | None:
    """The token of a URL path segment (any case), or None if it is not one."""
    text = text.strip().upper()
    if len(text) != 13:
        return None
    try:
        return base64.b32decode(text + "===")
    except ValueError:
        return None


class PairingWindow:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.web_token = secrets.token_bytes(TOKEN_SIZE)
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
        """Open with fresh tokens; ``duration`` None means until a client pairs."""
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.web_token = secrets.token_bytes(TOKEN_SIZE)
        self.expires_at = None if duration is None else self._clock() + duration
        self.is_open_flag = True

    def close(self) -> None:
        self.is_open_flag = False
        self.expires_at = None
        # A seen token is never valid again.
        self.token = secrets.token_bytes(TOKEN_SIZE)
        self.web_token = secrets.token_bytes(TOKEN_SIZE)

    def redeem(self, token: bytes) -> bool:
        """True once for the valid Noise token while open; the window then closes."""
        return self._redeem(token, self.token)

    def redeem_web(self, token: bytes) -> bool:
        """True once for the valid setup-page token while open; the window then closes."""
        return self._redeem(token, self.web_token)

    def _redeem(self, given: bytes, expected: bytes) -> bool:
        if not self.is_open or not hmac.compare_digest(given, expected):
            return False
        self.close()
        return True
