"""Encryption to a secp256k1 public key (ECIES), so only the key's holder can read a backup.

Each sealed blob has its own ephemeral key, so it needs no nonce bookkeeping and any
one blob can be decrypted alone::

    b"HS1" | ephemeral public key (33, compressed) | ChaCha20-Poly1305 ciphertext + tag

``shared = SHA256(compressed(e * P))`` (libsecp256k1's ECDH, as in BOLT #8),
``key = HKDF-SHA256(ikm=shared, salt=ephemeral_pub || recipient_pub,
info="hearth/backup/sealed/v1")``, nonce = 12 zero bytes (each key encrypts once).
``context`` is authenticated but not encrypted: the caller binds the stream, the kind
and the version with it, so the box cannot swap one stored blob for another unnoticed.
This module runs on the clients too (in the plugin's venv): coincurve and cryptography only.
"""

from __future__ import annotations

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["OVERHEAD", "SealedError", "seal", "unseal"]

_MAGIC = b"HS1"
_INFO = b"hearth/backup/sealed/v1"
_NONCE = bytes(12)
OVERHEAD = len(_MAGIC) + 33 + 16


class SealedError(ValueError):
    """Not a sealed blob, the wrong key, or the blob or its context was altered."""


def _key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_pub + recipient_pub,
                info=_INFO).derive(shared)


def seal(recipient_pub: bytes, plaintext: bytes, context: bytes = b"") -> bytes:
    recipient = coincurve.PublicKey(recipient_pub).format()
    ephemeral = coincurve.PrivateKey()
    eph_pub = ephemeral.public_key.format()
    key = _key(ephemeral.ecdh(recipient), eph_pub, recipient)
    return _MAGIC + eph_pub + ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, context)


def unseal(recipient_secret: bytes, blob: bytes, context: bytes = b"") -> bytes:
    if len(blob) < OVERHEAD or blob[:3] != _MAGIC:
        raise SealedError("not a sealed backup blob")
    eph_pub = blob[3:36]
    me = coincurve.PrivateKey(recipient_secret)
    try:
        shared = me.ecdh(eph_pub)
    except ValueError:
        raise SealedError("bad ephemeral key in sealed blob") from None
    key = _key(shared, eph_pub, me.public_key.format())
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, blob[36:], context)
    except InvalidTag:
        raise SealedError("cannot decrypt: wrong key, or the backup was altered") from None
