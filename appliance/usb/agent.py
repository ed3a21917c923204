"""What happens when a stick comes in: a verified encrypted backup, or a first-boot restore.

Synchronous and free of udev: the service runs :meth:`UsbAgent.handle` in a thread for
each stick the monitor reports (or a test hands it a block device or image). Every
outcome is one short sentence for the OLED; nothing secret is ever in it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..config import Config
from ..control import ControlError, ask
from ..control.messages import Export
from ..durability import fsync_dir
from ..identity import box_id, load_or_create_hsm_secret, recovery_phrase
from ..update.bundle import BundleError
from ..update.install import Offer, offer
from .archive import (
    BackupContents,
    BackupError,
    WrongPhraseError,
    decrypt_backup,
    encrypt_backup,
    metadata,
)
from .phrase import is_acknowledged, own_like
from .restore import RestoreError, apply_restore, normalize_phrase
from .stick import (
    BACKUP_DIR,
    StickError,
    Target,
    backup_name,
    backups_on,
    explain,
    mounted,
    open_regular,
    probe,
    prune,
    read_back,
    real_dir,
    repair_fat,
    write_to_stick,
)
from .update import bundles_on, clear_incoming, copy_bundle

__all__ = ["RESTORE_FILE", "Outcome", "UsbAgent", "agent_export", "box_secret", "restore_failure"]

log = logging.getLogger("usb")

RESTORE_FILE = "hearth-restore.txt"
_MAX_RESTORE_FILE = 4096


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str  # for the OLED: "Backup OK" / the reason it failed
    kind: str = "backup"  # backup | restore | update
    path: str = ""  # the file written or restored from (on the stick)
    seconds: float = 0.0
    box: str = ""  # a restore's box id (8 hex digits): published as data, not in the message
    offer: Offer | None = None  # an update: the verified copy on the box, to ask about


def box_secret(cfg: Config) -> bytes:
    """hsm_secret, made if missing (then owned by the services' user, not root)."""
    secret = load_or_create_hsm_secret(cfg.hsm_secret_file)
    own_like(cfg.hsm_secret_file, cfg.hearth.data_dir)
    return secret


def agent_export(cfg: Config) -> tuple[bytes | None, str, str]:
    """(export bytes, source, error): the backup service's fresh export ("live"), else the
    last export file it left ("last-export"), else nothing ("none")."""
    error = ""
    fallback = cfg.backup_export_file
    try:
        exported = ask(cfg.control_endpoint("backup"), Export(), timeout=cfg.usb.export_timeout_s)
        return Path(exported.path).read_bytes(), "live", ""
    except (ControlError, OSError) as exc:
        error = str(exc) or type(exc).__name__
    try:
        return fallback.read_bytes(), "last-export", error
    except FileNotFoundError:
        return None, "none", error
    except OSError as exc:
        return None, "none", f"{error}; {fallback}: {exc.strerror}"


class UsbAgent:
    def __init__(self, cfg: Config, *, on_progress: Callable[[str], None] | None = None,
                 on_update: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.on_progress = on_progress or (lambda text: None)
        self.on_update = on_update or (lambda name: None)  # an update bundle is being checked

    def handle(self, device: Path) -> Outcome:
        start = time.monotonic()
        try:
            target = probe(device, min_size=self.cfg.usb.min_size_mib * 2**20)
            repair_fat(target)
            with mounted(target, Path(self.cfg.usb.mount_dir)) as root:
                if (root / RESTORE_FILE).exists():
                    outcome = self._restore(root)
                elif bundles := bundles_on(root):
                    outcome = self._update(bundles)
                else:
                    outcome = self._backup(target, root)
        except StickError as exc:
            outcome = Outcome(False, str(exc))
        except (BackupError, RestoreError) as exc:
            outcome = Outcome(False, str(exc), kind="restore")
        except OSError as exc:  # the stick went away between two steps
            outcome = Outcome(False, str(explain(exc)))
        log.info("stick %s: %s (%.1f s)", device, outcome.message, time.monotonic() - start)
        return dataclasses.replace(outcome, seconds=time.monotonic() - start)

    # --- backup --------------------------------------------------------------------------
    def contents(self, secret: bytes) -> BackupContents:
        export, source, error = agent_export(self.cfg)
        extra = {"backup_agent_error": error} if error else {}
        clients: bytes | None = None
        with contextlib.suppress(OSError):
            clients = self.cfg.paired_clients_file.read_bytes()
        meta = metadata(secret, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        version=__version__, network=self.cfg.hearth.network, agent_source=source,
                        extra=extra)
        return BackupContents(secret, meta, export, clients)

    def _backup(self, target: Target, root: Path) -> Outcome:
        secret = box_secret(self.cfg)
        box = box_id(secret)
        phrase = " ".join(recovery_phrase(secret))
        contents = self.contents(secret)
        self.on_progress(f"encrypting for {target.name}")
        data = encrypt_backup(contents, phrase)  # in memory: the secret never meets a disk
        directory = root / BACKUP_DIR
        name = backup_name(box)
        while (directory / name).exists():  # two plug-ins within a second
            time.sleep(0.2)
            name = backup_name(box)
        self.on_progress(f"writing to {target.name}")
        while True:
            try:
                path = write_to_stick(directory, name, data)
                break
            except StickError as exc:
                # Full, but holding several of our own backups: the oldest makes room
                # (the newest existing one is never deleted before a new one is verified).
                if not str(exc).startswith("stick is full"):
                    raise
                ours = backups_on(directory, box)
                if len(ours) < 2:
                    raise
                log.info("stick full: deleting the oldest backup %s to make room", ours[-1].name)
                ours[-1].unlink()
        self.on_progress(f"verifying on {target.name}")
        try:
            back = read_back(path)
            check = decrypt_backup(back, phrase)
            if back != data or not hmac.compare_digest(check.hsm_secret, secret) \
                    or check.agent_export != contents.agent_export:
                raise BackupError("read-back differs")
        except (StickError, BackupError) as exc:
            with contextlib.suppress(OSError):
                path.unlink()  # never leave an unverified "latest" behind
            raise StickError(f"verify failed ({exc}): stick unreliable, try another") from None
        prune(directory, box, self.cfg.usb.keep)
        return Outcome(True, "Backup OK - remove stick", path=f"{BACKUP_DIR}/{name}")

    # --- update bundle ---------------------------------------------------------------------
    def _update(self, bundles: list[Path]) -> Outcome:
        """The stick's bundle, copied and verified: an offer to ask about, or why not.
        Never forced: the same or an older version is refused here."""
        if len(bundles) > 1:
            return Outcome(False, f"{len(bundles)} updates on stick: leave one", "update")
        self.on_update(bundles[0].name)
        try:
            copy = copy_bundle(bundles[0], self.cfg)
            chosen = offer(copy, self.cfg.update)
        except (StickError, BundleError) as exc:
            clear_incoming(self.cfg)
            return Outcome(False, str(exc), "update", bundles[0].name)
        return Outcome(True, chosen.question, "update", str(copy), offer=chosen)

    # --- first-boot restore ----------------------------------------------------------------
    def _restore(self, root: Path) -> Outcome:
        restore_file = root / RESTORE_FILE
        real_dir(root / BACKUP_DIR)
        if is_acknowledged(self.cfg):
            # The owner has this box's phrase: a stick carrying another phrase in the clear
            # is not something to back up next to. Leave it alone and say so.
            return Outcome(False, f"{RESTORE_FILE} on stick but box is set up: remove it", "restore")
        raw = read_back(restore_file, _MAX_RESTORE_FILE)  # a regular file, never a link
        phrase = normalize_phrase(raw.decode("utf-8", "replace"))
        candidates = backups_on(root / BACKUP_DIR)
        if not candidates:
            return Outcome(False, f"{RESTORE_FILE} but no HEARTH/*.age backup on stick", "restore")
        self.on_progress("restoring: trying the phrase")
        failures: list[BackupError] = []
        for path in candidates:
            try:
                contents = decrypt_backup(read_back(path), phrase)
            except BackupError as exc:
                log.info("restore: %s does not open: %s", path.name, exc)
                failures.append(exc)
                continue
            # Not acknowledged: any identity here was never shown to anyone, replace it.
            box = apply_restore(self.cfg, contents, force=True)
            _wipe(restore_file)
            self._after_restore()
            return Outcome(True, f"Restored box {box} - remove stick", "restore",
                           f"{BACKUP_DIR}/{path.name}", box=box)
        return Outcome(False, restore_failure(failures), "restore")

    def _after_restore(self) -> None:
        cmd = self.cfg.usb.restart_after_restore.split()
        if cmd:  # services started with the old identity pick up the restored one
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode:
                log.warning("after restore: %s exited %d: %s", cmd[0], result.returncode,
                            result.stderr.strip()[-200:])


def restore_failure(failures: list[BackupError]) -> str:
    """The OLED line when no backup opened: the newest backup's reason (the one the owner
    most likely meant), "wrong recovery phrase" only when its phrase check failed."""
    if failures and not isinstance(failures[0], WrongPhraseError):
        return f"restore: {failures[0]}"
    return f"restore: wrong recovery phrase in {RESTORE_FILE}"


def _wipe(path: Path) -> None:
    """Overwrite the phrase file with zeros, then delete it (best a FAT stick allows)."""
    fd = open_regular(path, os.O_WRONLY)
    try:
        os.write(fd, b"\0" * os.fstat(fd).st_size)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
