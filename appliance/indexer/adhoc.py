"""Scripts watched because a client subscribed to them ("watch on subscribe").

Electrum's Lightning subscribes to scripts no wallet xpub derives: a channel's funding
2-of-2 P2WSH, later its commitment and sweep outputs. Without history for them a channel
never opens. So a subscription to an unknown scripthash makes the box watch it from then
on, like a wallet script. We only know the scripthash (the protocol never sends the
script), so matching hashes every output script while any ad-hoc watch exists.

Bounds (docs/threat-model.md): ``SessionLimits.max_adhoc_watches`` new watches per
connection, ``MAX_ADHOC`` in total (when full, the watch nobody subscribed to for the
longest time gives way; if every one is subscribed right now, the new one is refused),
and a watch nobody has subscribed to for ``ADHOC_EXPIRY`` is forgotten with its index.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["ADHOC_EXPIRY", "ADHOC_RESCAN_BLOCKS", "ADHOC_TOUCH", "MAX_ADHOC", "AdhocEntry",
           "AdhocWatches"]

#: Ad-hoc watches in total (each costs ~100 bytes of RAM plus its history on disk).
MAX_ADHOC = 10_000
#: Forgotten after this long without any session subscribing (an Electrum wallet
#: re-subscribes its channels' scripts each time it starts).
ADHOC_EXPIRY = 90 * 86_400
#: "Last subscribed" is written to disk at most this often per script (SD card wear).
ADHOC_TOUCH = 86_400
#: At subscribe time, blocks this deep below the tip are re-read for the script, so an
#: output confirmed just before the subscription is found (see docs/index-schema.md).
ADHOC_RESCAN_BLOCKS = 6

_ENTRY = struct.Struct(">QQ")


@dataclass(slots=True)
class AdhocEntry:
    added: int  # unix seconds
    last: int  # last time a session subscribed (or was seen subscribed)

    def pack(self) -> bytes:
        return _ENTRY.pack(self.added, self.last)

    @classmethod
    def unpack(cls, data: bytes) -> AdhocEntry:
        added, last = _ENTRY.unpack(data)
        return cls(int(added), int(last))


class AdhocWatches:
    """The set of ad-hoc scripthashes with their timestamps (pure bookkeeping; the
    indexer persists what ``add``/``touch``/``expired`` decide)."""

    def __init__(self, entries: dict[bytes, AdhocEntry] | None = None,
                 limit: int = MAX_ADHOC, expiry: int = ADHOC_EXPIRY) -> None:
        self.entries: dict[bytes, AdhocEntry] = dict(entries or {})
        self.limit = limit
        self.expiry = expiry

    def __contains__(self, scripthash: object) -> bool:
        return scripthash in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.entries)

    def victim(self, subscribed: Callable[[bytes], bool]) -> bytes | None:
        """The watch to drop for a new one when full: least recently subscribed, and
        not subscribed by anyone right now. None if every one is in use."""
        for sh, _entry in sorted(self.entries.items(), key=lambda kv: kv[1].last):
            if not subscribed(sh):
                return sh
        return None

    def touch(self, scripthash: bytes, now: int) -> bool:
        """Mark as subscribed now; True if the stored timestamp is stale enough to rewrite."""
        entry = self.entries[scripthash]
        if now - entry.last < ADHOC_TOUCH:
            return False
        entry.last = now
        return True

    def expired(self, now: int, subscribed: Callable[[bytes], bool]) -> list[bytes]:
        return [sh for sh, e in self.entries.items()
                if now - e.last > self.expiry and not subscribed(sh)]
