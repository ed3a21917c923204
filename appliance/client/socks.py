"""A SOCKS5 CONNECT client (RFC 1928), enough to reach the box's onion address via Tor.

Hand-written rather than a dependency: the client needs only CONNECT by host name with
no authentication (Tor resolves ``.onion`` names itself, so the name must go to the
proxy, never to local DNS), which is ~40 lines; python-socks would add a package to
every computer and to the image's wheel set for that. Tor's extended reply codes
(0xF0-0xF7, tor's socks-extensions.txt) are turned into words.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_TOR", "SocksError", "SocksProxy"]

DEFAULT_TOR = "127.0.0.1:9050"

_REPLIES = {
    1: "general failure", 2: "not allowed by the proxy's rules", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired",
    7: "command not supported", 8: "address type not supported",
    0xF0: "onion service descriptor not found (the box is offline or not yet published)",
    0xF1: "onion service descriptor is invalid", 0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed", 0xF4: "onion service needs client authorization",
    0xF5: "onion service client authorization was refused", 0xF6: "not a valid onion address",
    0xF7: "onion service introduction timed out",
}


class SocksError(ConnectionError):
    """The proxy refused or failed the connection (the message says why)."""


@dataclass(frozen=True)
class SocksProxy:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> SocksProxy:
        """``socks5://host:port``, ``socks5h://host:port`` or plain ``host:port``."""
        url = urlsplit(text if "://" in text else f"socks5://{text}")
        if url.scheme not in ("socks5", "socks5h") or not url.hostname or not url.port:
            raise ValueError(f"not a SOCKS5 proxy address: {text!r} (socks5://host:port)")
        return cls(url.hostname, url.port)

    async def open_connection(self, host: str, port: int
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to ``host:port`` through the proxy (the name is resolved by the proxy)."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            name = host.encode("idna")
            if len(name) > 255:
                raise SocksError(f"host name too long for SOCKS5: {host[:40]}...")
            writer.write(b"\x05\x01\x00")  # version 5, one method: no authentication
            if await reader.readexactly(2) != b"\x05\x00":
                raise SocksError(f"the proxy at {self.host}:{self.port} wants authentication "
                                 "or is not SOCKS5")
            writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
            version, reply, _, atyp = await reader.readexactly(4)
            if version != 5 or reply != 0:
                raise SocksError(f"{host}:{port} via {self.host}:{self.port}: "
                                 f"{_REPLIES.get(reply, f'SOCKS error {reply}')}")
            # The bound address that follows means nothing to a client: skip it.
            size = {1: 4, 4: 16}.get(atyp) or (await reader.readexactly(1))[0]
            await reader.readexactly(size + 2)
        except asyncio.IncompleteReadError:
            writer.close()
            raise SocksError(f"the proxy at {self.host}:{self.port} closed the connection") from None
        except BaseException:
            writer.close()
            raise
        return reader, writer
