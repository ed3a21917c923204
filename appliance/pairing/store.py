"""The whitelist of paired client keys, in one small JSON file (0600, atomic writes).

Owned by the process that runs the Noise listener; everything else changes it through
that process's control socket.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..identity import write_secret_file

__all__ = ["PairedClient", "Whitelist"]


@dataclass(frozen=True)
class PairedClient:
    pubkey: str  # 33-byte compressed key, hex
    label: str
    paired_at: float  # unix time


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

    def add(self, pubkey: bytes, label: str) -> PairedClient:
        client = PairedClient(pubkey.hex(), label[:64], time.time())
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
