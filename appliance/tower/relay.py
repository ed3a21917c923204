"""The tower over the Noise channel: each paired client's BOLT-08 stream is piped, byte
for byte, to the tower's trusted unix-socket HTTP listener.

The client side is ``appliance-client tunnel --to tower``: a wallet's tower client (Electrum
``watchtower_url=http://127.0.0.1:PORT``, a TEOS client) talks plain HTTP to loopback on
its own machine and the bytes cross the LAN encrypted and authenticated. Who may connect
is the pairing whitelist the Electrum service keeps; it is re-read when it changes, so a
revocation (long button press) takes effect for new connections at once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..identity import NodeKey
from ..pairing.store import PairedKeys
from ..transport.noise import Keypair
from ..transport.stream import NoiseListener, NoiseServer, NoiseStream, pipe, start_server

__all__ = ["TowerRelay"]

log = logging.getLogger("tower.relay")


class TowerRelay(NoiseListener):
    def __init__(self, node_key: NodeKey, paired: PairedKeys, socket_path: Path) -> None:
        self.node_key = node_key
        self.paired = paired
        self.socket_path = socket_path
        self.server: NoiseServer | None = None

    async def start(self, host: str, port: int) -> None:
        self.server = await start_server(self._serve, host, port, Keypair.of(self.node_key),
                                         authorize=lambda pub: pub in self.paired)

    async def _serve(self, stream: NoiseStream) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        await pipe(stream, reader, writer)
