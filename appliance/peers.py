"""Per-address bookkeeping shared by the listeners: who a peer is, how many it holds.

Every listener on the LAN (Electrum TCP/TLS, Noise, the tower's HTTP) caps what one IP
address may hold at once; :class:`AddressCounts` is that count, and
:func:`peer_address` the key it is kept under.
"""

from __future__ import annotations

__all__ = ["AddressCounts", "peer_address"]


def peer_address(peername: object) -> str:
    """The IP of a socket's ``peername`` ("" for a unix socket or an unknown peer)."""
    return str(peername[0]) if isinstance(peername, tuple) and peername else ""


class AddressCounts:
    """How many of something each address holds, and in all; empty entries vanish."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.total = 0

    def __getitem__(self, address: str) -> int:
        return self._counts.get(address, 0)

    def acquire(self, address: str, limit: int | None = None, total: int | None = None) -> bool:
        """Count one more for ``address``; False (nothing counted) if it holds ``limit``
        or all addresses together hold ``total``."""
        held = self._counts.get(address, 0)
        if (limit is not None and held >= limit) or (total is not None and self.total >= total):
            return False
        self._counts[address] = held + 1
        self.total += 1
        return True

    def release(self, address: str) -> None:
        left = self._counts[address] - 1
        if left:
            self._counts[address] = left
        else:
            del self._counts[address]
        self.total -= 1
