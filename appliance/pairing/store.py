"""The whitelist of paired devices, in one small JSON file (0600, atomic writes).

Two kinds of device are paired: Noise clients (``kind`` "noise", keyed by their static
public key) and setup-page browsers (``kind`` "web", keyed by the SHA-256 of their
session cookie: the file never holds a usable cookie). Both are listed, revoked one by
one, and revoked together by the long press, in one place.

Owned by the process that runs the Noise listener; everything else changes it through
that process's control socket. Other services read it with :class:`PairedKeys` (Noise
keys: tower, backup; web session hashes: the setup page), which notices every change.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..identity import write_secret_file

__all__ = ["KIND_NOISE", "KIND_WEB", "PairedClient", "PairedKeys", "Whitelist"]

log = logging.getLogger("pairing")

KIND_NOISE = "noise"
KIND_WEB = "web"


@dataclass(frozen=True)
class PairedClient:
    pubkey: str  # noise: 33-byte compressed key; web: SHA-256 of the session cookie (hex)
    label: str
    paired_at: float  # unix time
    kind: str = KIND_NOISE  # files from before the setup page have no kind: all Noise


class Whitelist:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.clients: dict[bytes, PairedClient] = {}
        if path.exists():
            for item in json.loads(path.read_text()):
                client = PairedClient(**item)
                self.clients[bytes.fromhex(client.pubkey)] = client

    def __contains__(self, pubkey: bytes) -> bool:
        return pubkey in self.clients

    def _save(self) -> None:
        data = json.dumps([asdict(c) for c in self.clients.values()], indent=1).encode()
        write_secret_file(self.path, data)

    def add(self, pubkey: bytes, label: str, kind: str = KIND_NOISE) -> PairedClient:
        client = PairedClient(pubkey.hex(), label[:64], time.time(), kind)
        self.clients[pubkey] = client
        self._save()
        return client

    def revoke(self, pubkey: bytes) -> bool:
        if self.clients.pop(pubkey, None) is None:
            return False
        self._save()
        return True

    def reset(self) -> list[bytes]:
        revoked = list(self.clients)
        self.clients.clear()
        self._save()
        return revoked


class PairedKeys:
    """The paired keys of one kind, from the pairing store's JSON file, re-read on change."""

    def __init__(self, path: Path, kind: str = KIND_NOISE) -> None:
        self.path = path
        self.kind = kind
        self._stamp: tuple[int, int, int] | None = None
        self._keys: frozenset[bytes] = frozenset()

    def current(self) -> frozenset[bytes]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._keys = None, frozenset()
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                items = json.loads(self.path.read_text())
                keys = frozenset(bytes.fromhex(item["pubkey"]) for item in items
                                 if item.get("kind", KIND_NOISE) == self.kind)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Half-written by hand or corrupt: keep the last good list, say so.
                log.warning("cannot read the paired clients at %s (%s); keeping %d keys",
                            self.path, exc, len(self._keys))
                self._stamp = stamp  # warn once per change, not on every request
                return self._keys
            self._stamp, self._keys = stamp, keys
        return self._keys

    def __contains__(self, pubkey: bytes) -> bool:
        return pubkey in self.current()
