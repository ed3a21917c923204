"""Putting a decrypted backup's identity on this box (CLI ``appliance restore`` and first boot)."""

from __future__ import annotations

import hmac
from pathlib import Path

from ..config import Config
from ..identity import IdentityError, box_id, load_hsm_secret, write_secret_file
from .archive import BackupContents
from .phrase import acknowledge, own_like

__all__ = ["RestoreError", "apply_restore", "normalize_phrase"]


class RestoreError(Exception):
    """The restore was refused; the message is safe to show."""


def normalize_phrase(text: str) -> str:
    """The phrase as the backups use it: lower case words joined by single spaces."""
    return " ".join(text.lower().split())


def _write_owned(cfg: Config, path: Path, data: bytes) -> None:
    write_secret_file(path, data)
    own_like(path.parent, cfg.hearth.data_dir)
    own_like(path, cfg.hearth.data_dir)


def apply_restore(cfg: Config, contents: BackupContents, *, force: bool = False) -> str:
    """Install the backup's hsm_secret (and what came with it); returns the box id.

    An existing, different secret is kept unless ``force``: overwriting it would lose
    that identity for good."""
    path = cfg.hsm_secret_file
    if path.exists():
        try:
            current = load_hsm_secret(path)
        except IdentityError:
            current = b""  # corrupt or unreadable: replacing it loses nothing usable
        if current and not hmac.compare_digest(current, contents.hsm_secret) and not force:
            raise RestoreError(f"this box already has another identity (box {box_id(current)}); "
                               "restore with --force to replace it")
    cfg.hearth.data_dir.mkdir(parents=True, exist_ok=True)
    _write_owned(cfg, path, contents.hsm_secret)
    if contents.agent_export is not None:
        # The backup service imports this on its next start (docs/usb-backup.md).
        _write_owned(cfg, cfg.service_dir("backup") / "import.bin", contents.agent_export)
    clients = cfg.service_dir("indexer") / "paired-clients.json"
    if contents.paired_clients is not None and (force or not clients.exists()):
        _write_owned(cfg, clients, contents.paired_clients)
    acknowledge(cfg)  # whoever restores holds the phrase already
    return contents.box_id
