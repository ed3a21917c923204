"""Who gets a session, and how many request bytes each address may have in flight.

Pure bookkeeping, no I/O. Paired clients (authenticated by their Noise key) draw from
their own pool, which no unauthenticated client can take; unauthenticated (TCP/TLS)
clients share ``max_sessions``, at most ``per_address`` of them from one address. Every
unauthenticated connection gets a :class:`Ticket` that charges the bytes of requests it
has received but not yet answered (an unfinished line included) to its address and to
the total: past ``address_inflight`` or ``total_inflight`` the charge is refused and the
caller drops the request, so memory under a flood is bounded by the budget, not by the
number of connections.

An address whose client abused its share (a refused request: too large, too slow, too
costly, past the cost limit) is kept out for ``penalty`` seconds, so a flood costs the
server one burst per address per penalty, not one per reconnection.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from .. import memtrim
from ..peers import AddressCounts

__all__ = ["Admission", "FairShare", "Ticket"]

#: After this many request bytes were received, give freed memory back to the system
#: once the bytes in flight are low again (see :mod:`appliance.memtrim`): at most every
#: ``_TRIM_EVERY`` seconds, as a trim walks the heap (~3 ms).
_TRIM_AFTER = 8_000_000
_TRIM_BELOW = 1_000_000
_TRIM_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class FairShare:
    """Capacity split between paired and unauthenticated clients."""

    #: unauthenticated (TCP/TLS) sessions, all addresses together
    max_sessions: int = 100
    #: sessions kept for paired (Noise) clients; unauthenticated ones never use them
    paired_sessions: int = 32
    #: unauthenticated sessions from one address
    per_address: int = 16
    #: bytes of unanswered requests (and unfinished lines) one address may hold
    address_inflight: int = 4_000_000
    #: the same for every unauthenticated client together
    total_inflight: int = 32_000_000
    #: seconds an abusive address is refused new sessions (up to half as long again, at
    #: random, so many addresses cannot all come back at the same moment)
    penalty: float = 30.0


class Ticket:
    """One admitted connection's share: its address, its bytes in flight."""

    def __init__(self, admission: Admission, address: str, paired: bool) -> None:
        self._admission = admission
        self.address = address
        self.paired = paired
        self.held = 0
        self.closed = False

    def hold(self, size: int) -> bool:
        """Charge ``size`` more bytes; False (nothing charged) when over a budget."""
        if self.closed:
            return False
        if not self.paired and not self._admission._charge(self.address, size):
            return False
        self.held += size
        return True

    def release(self, size: int) -> None:
        size = min(size, self.held)
        if size <= 0:
            return
        self.held -= size
        if not self.paired:
            self._admission._uncharge(self.address, size)

    def close(self) -> None:
        """Give back the session slot and every byte still charged. Idempotent."""
        if self.closed:
            return
        self.release(self.held)
        self.closed = True
        self._admission._leave(self)


class Admission:
    def __init__(self, share: FairShare) -> None:
        self.share = share
        self.paired = 0
        self._per_address = AddressCounts()  # unpaired sessions
        self._bytes: dict[str, int] = {}
        self.inflight = 0
        self._received = 0  # bytes charged since the last trim
        self._trimmed_at = 0.0
        self._penalized: dict[str, float] = {}  # address -> refused until (monotonic)

    def refusal(self, address: str, paired: bool) -> str | None:
        """Why a new session from ``address`` would be refused now, or None."""
        if paired:
            if self.paired >= self.share.paired_sessions:
                return f"{self.paired} paired sessions open"
            return None
        until = self._penalized.get(address)
        if until is not None:
            if time.monotonic() < until:
                return "this address abused its share recently"
            del self._penalized[address]
        if self._per_address[address] >= self.share.per_address:
            return f"{self.share.per_address} sessions open from this address"
        if self.unpaired >= self.share.max_sessions:
            return f"{self.unpaired} sessions open"
        return None

    def open(self, address: str, paired: bool) -> Ticket | None:
        if self.refusal(address, paired) is not None:
            return None
        if paired:
            self.paired += 1
        else:
            self._per_address.acquire(address)
        return Ticket(self, address, paired)

    @property
    def unpaired(self) -> int:
        return self._per_address.total

    def penalize(self, address: str) -> None:
        """Refuse new unpaired sessions from ``address`` for ``share.penalty`` seconds."""
        if len(self._penalized) > 4096:  # bounded: forget the expired ones
            now = time.monotonic()
            self._penalized = {a: t for a, t in self._penalized.items() if t > now}
        self._penalized[address] = (time.monotonic()
                                    + self.share.penalty * random.uniform(1.0, 1.5))

    def address_sessions(self, address: str) -> int:
        return self._per_address[address]

    def _leave(self, ticket: Ticket) -> None:
        if ticket.paired:
            self.paired -= 1
        else:
            self._per_address.release(ticket.address)

    def _charge(self, address: str, size: int) -> bool:
        held = self._bytes.get(address, 0)
        if (held + size > self.share.address_inflight
                or self.inflight + size > self.share.total_inflight):
            return False
        self._bytes[address] = held + size
        self.inflight += size
        self._received += size
        return True

    def _uncharge(self, address: str, size: int) -> None:
        left = self._bytes[address] - size
        if left:
            self._bytes[address] = left
        else:
            del self._bytes[address]
        self.inflight -= size
        self.maybe_trim()

    def maybe_trim(self) -> bool:
        """Return freed memory to the system if a burst has come and gone (also called
        periodically, so the last burst's memory goes back too)."""
        if self._received < _TRIM_AFTER or self.inflight >= _TRIM_BELOW:
            return False
        now = time.monotonic()
        if now - self._trimmed_at < _TRIM_EVERY:
            return False
        self._trimmed_at = now
        self._received = 0
        return memtrim.trim()
