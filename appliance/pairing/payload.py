"""The pairing QR payload: the box's key, where to reach it, and a one-time token.

Binary layout (46 bytes): x-only static public key (32; the box's key always has even Y,
see docs/identity.md) | IPv4 address (4) | Noise port (2, big-endian) | token (8).
Text: ``HEARTH:`` + Base45 (RFC 9285) of those bytes = 76 characters, all in the QR
alphanumeric set, so it fits a version 3-L QR code (77 alphanumeric characters), which
renders at 2 px per module on a 128x64 OLED. Base45 is hand-written here because it is
20 lines with the RFC's vectors as tests; a dependency would not be smaller.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["PREFIX", "PairingPayload", "PayloadError", "b45decode", "b45encode"]

PREFIX = "HEARTH:"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_LAYOUT = struct.Struct(">32s4sH8s")


class PayloadError(ValueError):
    """Not a Hearth pairing payload (the message says why, never the token)."""


def b45encode(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        e, n = divmod(n, 45 * 45)
        d, c = divmod(n, 45)
        out += [_ALPHABET[c], _ALPHABET[d], _ALPHABET[e]]
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += [_ALPHABET[c], _ALPHABET[d]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    try:
        values = [_INDEX[c] for c in text]
    except KeyError as exc:
        raise PayloadError(f"invalid Base45 character {exc.args[0]!r}") from None
    if len(values) % 3 == 1:
        raise PayloadError("invalid Base45 length")
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i:i + 3]
        if len(chunk) == 3:
            n = chunk[0] + chunk[1] * 45 + chunk[2] * 45 * 45
            if n > 0xFFFF:
                raise PayloadError("invalid Base45 triple")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + chunk[1] * 45
            if n > 0xFF:
                raise PayloadError("invalid Base45 pair")
            out.append(n)
    return bytes(out)


@dataclass(frozen=True)
class PairingPayload:
    pubkey: bytes  # 33-byte compressed (always 02-prefixed)
    host: str  # IPv4 dotted quad
    port: int
    token: bytes  # 8 bytes, single use

    def __repr__(self) -> str:  # the token is a secret while the window is open
        return f"PairingPayload(pubkey={self.pubkey.hex()}, host={self.host}, port={self.port})"

    def encode(self) -> str:
        if len(self.pubkey) != 33 or self.pubkey[0] != 2:
            raise PayloadError("the box's key must be compressed with even Y (02 prefix)")
        if len(self.token) != 8:
            raise PayloadError("the token must be 8 bytes")
        address = ipaddress.IPv4Address(self.host).packed
        return PREFIX + b45encode(_LAYOUT.pack(self.pubkey[1:], address, self.port, self.token))

    @classmethod
    def decode(cls, text: str) -> PairingPayload:
        text = text.strip()
        if not text.startswith(PREFIX):
            raise PayloadError(f"a Hearth pairing code starts with {PREFIX!r}")
        raw = b45decode(text[len(PREFIX):])
        if len(raw) != _LAYOUT.size:
            raise PayloadError(f"pairing code has {len(raw)} bytes, expected {_LAYOUT.size}")
        xonly, address, port, token = _LAYOUT.unpack(raw)
        if port == 0:
            raise PayloadError("pairing code has port 0")
        return cls(b"\x02" + xonly, str(ipaddress.IPv4Address(address)), port, token)
