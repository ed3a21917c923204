"""The box's root secret (``hsm_secret``) and every key derived from it.

``hsm_secret`` is 32 random bytes made once (first boot), mode 0600, written atomically.
Every identity the box has is derived from it with HKDF-SHA256 and a documented label
(``docs/identity.md``), so restoring the secret from a backup restores the same Noise
key, tower key and backup keys: paired clients and watchtower users keep working.

Never log or print a secret or a derived private key; only public keys leave here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from coincurve import PrivateKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .durability import write_atomic

__all__ = [
    "HSM_SECRET_SIZE",
    "LABELS",
    "IdentityError",
    "NodeKey",
    "box_id",
    "derive_bytes",
    "derive_secp256k1",
    "load_hsm_secret",
    "load_or_create_hsm_secret",
    "recovery_phrase",
    "write_secret_file",
]

HSM_SECRET_SIZE = 32

#: label -> what the derived material is for. The HKDF ``info`` is b"hearth/v1/" + label.
LABELS = {
    "noise-static": "the box's BOLT-08 static key (its identity to paired clients)",
    "tower-key": "the watchtower's signing key (receipts, registration)",
    "backup-encryption": "the key that encrypts stored channel-state backups",
    "recovery-phrase": "16 bytes of BIP39 entropy: the 12-word phrase, passphrase of USB backups",
    "box-id": "4 bytes shown as 8 hex digits: the box's name on sticks and pages (not secret)",
    "onion-service": "the ed25519 seed of the Tor onion service key (its .onion address)",
}

_SALT = b"hearth hsm_secret v1"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class IdentityError(Exception):
    """The secret is missing, unreadable or malformed (the message never contains it)."""


def write_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (tmp, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, 0o600)


def load_hsm_secret(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"no hsm_secret at {path}") from None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) != HSM_SECRET_SIZE:
        raise IdentityError(f"{path} is {len(data)} bytes, not {HSM_SECRET_SIZE}: corrupt")
    if path.stat().st_mode & 0o077:
        raise IdentityError(f"{path} is readable by others: chmod 600 it")
    return data


def load_or_create_hsm_secret(path: Path) -> bytes:
    """The secret at ``path``; made (32 bytes from the OS CSPRNG) if there is none.

    Several services start together on first boot: the file is created under a temporary
    name and hard-linked into place, which fails if another process got there first, so
    every process ends up with the same secret."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.new{os.getpid()}")
        write_secret_file(tmp, secrets.token_bytes(HSM_SECRET_SIZE))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink()
    return load_hsm_secret(path)


def derive_bytes(hsm_secret: bytes, label: str, length: int = 32) -> bytes:
    if label not in LABELS:
        raise ValueError(f"unknown key label {label!r}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT,
                info=b"hearth/v1/" + label.encode()).derive(hsm_secret)


@dataclass(frozen=True)
class NodeKey:
    """A secp256k1 key pair; ``secret`` is 32 bytes, ``public`` 33 bytes compressed."""

    secret: bytes
    public: bytes

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"NodeKey(public={self.public.hex()})"


def derive_secp256k1(hsm_secret: bytes, label: str) -> NodeKey:
    """A secp256k1 key from the secret, with an even-Y public key.

    Even Y lets the pairing QR carry only the 32-byte x coordinate (the prefix is
    always 02): when the derived key has odd Y we use its negation n - k.
    """
    k = int.from_bytes(derive_bytes(hsm_secret, label), "big") % (_SECP256K1_N - 1) + 1
    key = PrivateKey(k.to_bytes(32, "big"))
    if key.public_key.format()[0] == 3:
        key = PrivateKey((_SECP256K1_N - k).to_bytes(32, "big"))
    return NodeKey(key.secret, key.public_key.format())


def recovery_phrase(hsm_secret: bytes) -> list[str]:
    """The 12 BIP39 English words that are the passphrase of every USB backup.

    Derived, never stored: the box shows it once (first boot) and can recompute it from
    ``hsm_secret``; a restored box therefore has the same phrase as the original."""
    from mnemonic import Mnemonic  # only the services that show or use the phrase load it

    entropy = derive_bytes(hsm_secret, "recovery-phrase", 16)
    return str(Mnemonic("english").to_mnemonic(entropy)).split(" ")


def box_id(hsm_secret: bytes) -> str:
    """A short public name for the box (8 hex digits), stable across restores."""
    return derive_bytes(hsm_secret, "box-id", 4).hex()
