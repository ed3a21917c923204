"""The USB backup file: a tar payload, encrypted in memory to an age scrypt recipient.

The file is the standard age format (``age-encryption.org/v1``) with one scrypt
recipient whose passphrase is the recovery phrase, so ``age -d`` decrypts it without
Hearth. pyrage (rage) encrypts; :mod:`.agefile` decrypts, with a fixed work-factor cap
(rage's own decryptor refuses files by a speed estimate taken at decrypt time). The
plaintext is an uncompressed POSIX tar holding:

* ``hsm_secret``: the 32-byte root secret;
* ``metadata.json``: format, box id, creation time, version, network, where the
  backup-agent data came from;
* ``backup-agent/export.bin``: the channel-state backup service's export (ciphertext
  only), when there was one;
* ``pairing/paired-clients.json``: the paired clients' public keys, so a restored box
  still knows its phones and desktops.

Nothing here touches a disk: the secret exists in plaintext only in this process's memory.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyrage

from ..identity import HSM_SECRET_SIZE, box_id
from . import agefile

__all__ = [
    "FORMAT",
    "MAX_PAYLOAD",
    "BackupContents",
    "BackupError",
    "WrongPhraseError",
    "build_payload",
    "decrypt_backup",
    "encrypt_backup",
    "metadata",
    "parse_payload",
    "scrypt_work_factor",
]

FORMAT = "hearth-usb-backup/1"
#: A payload larger than this is refused on restore (a hostile or broken file).
MAX_PAYLOAD = 256 * 1024 * 1024
_MEMBERS = {
    "hsm_secret": "hsm_secret",
    "metadata.json": "metadata.json",
    "backup-agent/export.bin": "agent_export",
    "pairing/paired-clients.json": "paired_clients",
}


class BackupError(ValueError):
    """The backup cannot be made or read; the message is safe to show (no secret)."""


class WrongPhraseError(BackupError):
    """The phrase does not open the file: its scrypt stanza's body fails to decrypt."""


@dataclass(frozen=True)
class BackupContents:
    hsm_secret: bytes = field(repr=False)
    metadata: dict[str, Any]
    agent_export: bytes | None = None
    paired_clients: bytes | None = None

    @property
    def box_id(self) -> str:
        return box_id(self.hsm_secret)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # the time is in metadata.json; equal inputs give equal tars
    tar.addfile(info, io.BytesIO(data))


def build_payload(contents: BackupContents) -> bytes:
    if len(contents.hsm_secret) != HSM_SECRET_SIZE:
        raise BackupError("hsm_secret has the wrong size")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "hsm_secret", contents.hsm_secret)
        _add(tar, "metadata.json", json.dumps(contents.metadata, indent=1, sort_keys=True).encode(),
             0o644)
        if contents.agent_export is not None:
            _add(tar, "backup-agent/export.bin", contents.agent_export)
        if contents.paired_clients is not None:
            _add(tar, "pairing/paired-clients.json", contents.paired_clients, 0o644)
    return buf.getvalue()


def parse_payload(payload: bytes) -> BackupContents:
    """The members of a decrypted payload, strictly: regular files with known names only."""
    if len(payload) > MAX_PAYLOAD:
        raise BackupError("the backup is implausibly large")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
            for member in tar:
                if member.name not in _MEMBERS or not member.isfile() or member.name in found:
                    raise BackupError(f"unexpected entry {member.name[:60]!r} in the backup")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file always has data
                found[member.name] = extracted.read()
    except tarfile.TarError as exc:
        raise BackupError(f"not a Hearth payload ({exc})") from None
    secret = found.get("hsm_secret")
    if secret is None or len(secret) != HSM_SECRET_SIZE:
        raise BackupError("the backup holds no valid hsm_secret")
    try:
        metadata = json.loads(found.get("metadata.json", b""))
    except ValueError:
        raise BackupError("the backup's metadata.json is not JSON") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise BackupError(f"not a {FORMAT} backup")
    if metadata.get("box_id") != box_id(secret):
        raise BackupError("the backup's box id does not match its secret")
    return BackupContents(secret, metadata, found.get("backup-agent/export.bin"),
                          found.get("pairing/paired-clients.json"))


def encrypt_backup(contents: BackupContents, phrase: str) -> bytes:
    """The age file (binary format) for ``contents``; scrypt's cost is rage's calibrated one."""
    return bytes(pyrage.passphrase.encrypt(build_payload(contents), phrase))


def decrypt_backup(data: bytes, phrase: str) -> BackupContents:
    """The contents of a backup file; each failure says which it is (never a guess)."""
    try:
        payload = agefile.decrypt(data, phrase)
    except agefile.NotAgeFile:
        raise BackupError("not an age file") from None
    except agefile.WrongPassphrase:
        raise WrongPhraseError("wrong recovery phrase") from None
    except agefile.WorkFactorTooHigh as exc:
        raise BackupError(str(exc)) from None
    except agefile.NoPassphraseStanza:
        raise BackupError("not a Hearth backup (no passphrase)") from None
    except agefile.ScryptMemoryError as exc:
        raise BackupError(str(exc)) from None
    except agefile.AgeError as exc:  # header, MAC or payload: the bytes changed
        raise BackupError(f"damaged backup: {exc}") from None
    return parse_payload(payload)


def scrypt_work_factor(data: bytes) -> int | None:
    """log2(N) of the file's scrypt stanza (the cost of every decryption), if it has one."""
    return agefile.work_factor(data)


def metadata(secret: bytes, *, created: str, version: str, network: str,
             agent_source: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """metadata.json's content (no secret in it)."""
    meta: dict[str, Any] = {"format": FORMAT, "box_id": box_id(secret), "created": created,
                            "hearth_version": version, "network": network,
                            "backup_agent": agent_source}
    meta.update(extra or {})
    return meta
