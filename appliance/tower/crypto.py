"""TEOS / BOLT-13 draft cryptography, in rust-teos's byte order.

* locator = the first 16 bytes of the commitment txid in internal (wire) order;
* blob = ChaCha20-Poly1305(key = sha256(txid, internal order), nonce = 12 zero bytes,
  no associated data) of the penalty transaction's consensus serialization;
* signatures are Lightning "signmessage" ones: recoverable ECDSA over
  sha256d("Lightning Signed Message:" + data), 65 bytes with header 31 + recid,
  zbase32-encoded. A user is identified by the public key that signature recovers.

Checked against rust-teos's published vector (firmware-tests/vectors/teos_crypto.json).
"""

from __future__ import annotations

import hashlib
import struct

from coincurve import PrivateKey, PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "LOCATOR_SIZE",
    "SUBSCRIPTION_INFO_MESSAGE",
    "SignatureError",
    "appointment_message",
    "appointment_receipt",
    "decrypt_blob",
    "encrypt_blob",
    "get_appointment_message",
    "locator_of",
    "registration_receipt",
    "recover_user",
    "sign_message",
    "zbase32_decode",
    "zbase32_encode",
]

LOCATOR_SIZE = 16
_NONCE = bytes(12)
_MESSAGE_PREFIX = b"Lightning Signed Message:"
_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_INDEX = {c: i for i, c in enumerate(_ZBASE32)}


class SignatureError(ValueError):
    """A signature that is not zbase32, not 65 bytes, or recovers no key."""


def locator_of(txid: bytes) -> bytes:
    """``txid`` in internal byte order (as hashed, not as displayed)."""
    if len(txid) != 32:
        raise ValueError("a txid is 32 bytes")
    return txid[:LOCATOR_SIZE]


def encrypt_blob(penalty_tx: bytes, commitment_txid: bytes) -> bytes:
    key = hashlib.sha256(commitment_txid).digest()
    return ChaCha20Poly1305(key).encrypt(_NONCE, penalty_tx, None)


def decrypt_blob(blob: bytes, commitment_txid: bytes) -> bytes | None:
    """The penalty transaction, or None if ``blob`` was not made with this txid."""
    key = hashlib.sha256(commitment_txid).digest()
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, blob, None)
    except InvalidTag:
        return None


def zbase32_encode(data: bytes) -> str:
    bits = int.from_bytes(data, "big") if data else 0
    nbits = len(data) * 8
    pad = (-nbits) % 5
    bits <<= pad
    n = (nbits + pad) // 5
    return "".join(_ZBASE32[(bits >> (5 * (n - 1 - i))) & 31] for i in range(n))


def zbase32_decode(text: str) -> bytes:
    bits = 0
    for ch in text:
        try:
            bits = (bits << 5) | _ZBASE32_INDEX[ch]
        except KeyError:
            raise SignatureError("not zbase32") from None
    nbits = len(text) * 5
    nbytes = nbits // 8
    return (bits >> (nbits - nbytes * 8)).to_bytes(nbytes, "big")


def _digest(message: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(_MESSAGE_PREFIX + message).digest()).digest()


def sign_message(message: bytes, key: PrivateKey) -> str:
    sig = key.sign_recoverable(_digest(message), hasher=None)  # r || s || recid
    return zbase32_encode(bytes([31 + sig[64]]) + sig[:64])


def recover_user(message: bytes, signature: str) -> bytes:
    """The 33-byte compressed public key that signed ``message``."""
    if not isinstance(signature, str) or not signature:
        raise SignatureError("empty signature")
    raw = zbase32_decode(signature)
    if len(raw) != 65 or not 31 <= raw[0] <= 34:
        raise SignatureError("not a 65-byte compact recoverable signature")
    try:
        pub = PublicKey.from_signature_and_message(raw[1:] + bytes([raw[0] - 31]), _digest(message),
                                                   hasher=None)
    except Exception:
        raise SignatureError("the signature recovers no public key") from None
    return pub.format(compressed=True)


# What is signed, byte for byte as rust-teos (teos-common appointment.rs, receipts.rs):
# the user signs requests, the tower signs receipts. Integers are u32 big-endian.
SUBSCRIPTION_INFO_MESSAGE = b"get subscription info"


def appointment_message(locator: bytes, blob: bytes, to_self_delay: int) -> bytes:
    return locator + blob + struct.pack(">I", to_self_delay)


def get_appointment_message(locator: bytes) -> bytes:
    return f"get appointment {locator.hex()}".encode()


def registration_receipt(user_id: bytes, available_slots: int, subscription_expiry: int) -> bytes:
    return user_id + struct.pack(">II", available_slots, subscription_expiry)


def appointment_receipt(user_signature: str, start_block: int) -> bytes:
    return user_signature.encode() + struct.pack(">I", start_block)
