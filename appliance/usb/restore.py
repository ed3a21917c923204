"""Putting a decrypted backup's identity on this box (CLI ``appliance restore`` and first boot)."""

from __future__ import annotations

import hmac
import importlib
import logging
import os
from pathlib import Path

from ..config import Config
from ..identity import IdentityError, box_id, load_hsm_secret, write_secret_file
from .archive import BackupContents
from .phrase import acknowledge, own_like

__all__ = ["RestoreError", "apply_restore", "import_agent_data", "normalize_phrase"]

log = logging.getLogger("usb")


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
        path = cfg.backup_import_file
        _write_owned(cfg, path, contents.agent_export)
        log.info("backup-agent data: %s", import_agent_data(cfg, path))
    clients = cfg.paired_clients_file
    if contents.paired_clients is not None and (force or not clients.exists()):
        _write_owned(cfg, clients, contents.paired_clients)
    acknowledge(cfg)  # whoever restores holds the phrase already
    return contents.box_id


def import_agent_data(cfg: Config, path: Path) -> str:
    """Put the backup-agent export back with the backup service's own importer
    (``appliance.backup.export.restore_export``) and delete ``path``; if that module is
    not installed or refuses (it never overwrites existing streams), ``path`` stays for
    the owner or the service. Returns what happened, for the log."""
    try:
        module = importlib.import_module("appliance.backup.export")
    except ImportError:
        return f"kept {path} (no backup service on this build)"
    root = cfg.service_dir("backup")
    try:
        count = module.restore_export(path, root)
    except (ValueError, OSError, getattr(module, "ExportError", ValueError)) as exc:
        return f"kept {path}: {exc}"
    for directory, _, files in os.walk(root):  # root made them; the service runs as hearth
        own_like(Path(directory), cfg.hearth.data_dir)
        for name in files:
            own_like(Path(directory) / name, cfg.hearth.data_dir)
    path.unlink()
    return f"restored {count} streams"
