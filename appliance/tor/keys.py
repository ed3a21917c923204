"""The onion service's key, derived from ``hsm_secret``, in the files tor reads.

The v3 onion service key is an ed25519 key whose 32-byte seed is HKDF of the box's root
secret with the label ``onion-service`` (docs/identity.md), so a box restored from a USB
backup has the same ``.onion`` address and every wallet that knew it keeps working.

tor keeps the key in ``<HiddenServiceDir>/hs_ed25519_secret_key``: the 32-byte header
``== ed25519v1-secret: type0 ==\\0\\0\\0`` and the 64-byte *expanded* key
``clamp(SHA512(seed)[:32]) || SHA512(seed)[32:]`` (tor never stores the seed). The
address is ``base32(pubkey || checksum || version)`` with
``checksum = SHA3-256(".onion checksum" || pubkey || version)[:2]`` and version 3
(rend-spec-v3, "Encoding onion addresses [ONIONADDRESS]"). Pure code: no I/O but
:func:`write_service_dir`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config import Config
from ..identity import derive_bytes, write_secret_file

__all__ = ["LABEL", "OnionKey", "OnionKeyError", "box_onion", "derive_onion_key",
           "onion_address", "pubkey_of_address", "write_service_dir"]

#: The HKDF label of the onion service key (docs/identity.md).
LABEL = "onion-service"

SECRET_HEADER = b"== ed25519v1-secret: type0 ==\0\0\0"
PUBLIC_HEADER = b"== ed25519v1-public: type0 ==\0\0\0"
_VERSION = b"\x03"


class OnionKeyError(ValueError):
    """A malformed onion address (the message never contains key material)."""


@dataclass(frozen=True)
class OnionKey:
    """The onion service's ed25519 key: ``expanded`` is secret, ``public`` is not."""

    expanded: bytes  # 64 bytes: clamped scalar || PRF key, what tor stores
    public: bytes  # 32 bytes

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"OnionKey(address={self.address})"

    @property
    def address(self) -> str:
        return onion_address(self.public)


def derive_onion_key(hsm_secret: bytes) -> OnionKey:
    seed = derive_bytes(hsm_secret, LABEL)
    digest = bytearray(hashlib.sha512(seed).digest())
    digest[0] &= 248  # ed25519 clamping (RFC 8032 5.1.5), as tor does when it expands a seed
    digest[31] &= 127
    digest[31] |= 64
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    return OnionKey(bytes(digest), public)


def box_onion(cfg: Config, hsm_secret: bytes) -> str | None:
    """The box's onion address when tor is on (what paired clients are told), else None."""
    return derive_onion_key(hsm_secret).address if cfg.tor.enabled else None


def _checksum(public: bytes) -> bytes:
    return hashlib.sha3_256(b".onion checksum" + public + _VERSION).digest()[:2]


def onion_address(public: bytes) -> str:
    """``<56 base32 characters>.onion`` of a 32-byte ed25519 public key."""
    if len(public) != 32:
        raise OnionKeyError("an onion service key is 32 bytes")
    raw = public + _checksum(public) + _VERSION
    return base64.b32encode(raw).decode().lower() + ".onion"


def pubkey_of_address(address: str) -> bytes:
    """The public key in a v3 onion address, after checking its checksum and version."""
    label = address.strip().lower().removesuffix(".onion").rsplit(".", 1)[-1]
    if len(label) != 56:
        raise OnionKeyError(f"{address!r} is not a v3 onion address (56 characters)")
    try:
        raw = base64.b32decode(label.upper())
    except ValueError:
        raise OnionKeyError(f"{address!r} is not base32") from None
    public, checksum, version = raw[:32], raw[32:34], raw[34:]
    if version != _VERSION or checksum != _checksum(public):
        raise OnionKeyError(f"{address!r} has a bad checksum or version")
    return public


def write_service_dir(directory: Path, key: OnionKey) -> None:
    """Write tor's HiddenServiceDir: the key files and ``hostname`` (all 0600, dir 0700).

    Rewritten on every start, so a restored ``hsm_secret`` wins over whatever key was
    there. The caller runs tor as its own user, which then owns them, as tor demands."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    files = {"hs_ed25519_secret_key": SECRET_HEADER + key.expanded,
             "hs_ed25519_public_key": PUBLIC_HEADER + key.public,
             "hostname": (key.address + "\n").encode()}
    for name, data in files.items():
        write_secret_file(directory / name, data)
