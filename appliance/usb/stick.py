"""A USB stick as the backup target: probe it, refuse odd ones, mount it, write files safely.

The seam between hardware and code is the block device: on the box it is ``/dev/sdX``
from udev; in tests a loop device (``losetup``) or a filesystem image file over a real
filesystem. Probing uses ``blkid -p`` and ``sfdisk --json`` on the device itself, so a
stick's partition table is read the same way whether or not the kernel made partition
nodes. Mounting is always ``mount -o nosuid,nodev,noexec`` (plus ``loop,offset=`` for an
image or a partition without a node); a kernel without vfat (this CI's) falls back to
``fusefat``, the FUSE FAT driver, with the same options.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..durability import write_atomic

__all__ = [
    "BACKUP_DIR",
    "SUPPORTED_FS",
    "StickError",
    "Target",
    "backup_name",
    "backups_on",
    "explain",
    "mounted",
    "open_regular",
    "probe",
    "prune",
    "read_back",
    "real_dir",
    "repair_fat",
    "write_to_stick",
]

log = logging.getLogger("usb")

BACKUP_DIR = "HEARTH"
#: Filesystems the box writes: what sticks come with (FAT32, exFAT) and Linux's own.
SUPPORTED_FS = ("vfat", "exfat", "ext4", "ext3", "ext2")
_TOOL_TIMEOUT = 30.0


class StickError(Exception):
    """Why a stick cannot be used or a write failed: short, for the OLED and the status bus."""


@dataclass(frozen=True)
class Target:
    """Where the filesystem is: ``device`` from byte ``offset`` on (0 unless no partition node)."""

    device: Path
    fstype: str
    size: int  # bytes of the filesystem's container (partition or whole device)
    offset: int = 0
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.device.name


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=check)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise StickError(f"{args[0]} failed: {detail[-1] if detail else exc.returncode}") from None
    except subprocess.TimeoutExpired:
        raise StickError(f"{args[0]} hung (stick not responding)") from None
    except FileNotFoundError:
        raise StickError(f"{args[0]} is not installed") from None


def _blkid(device: Path, offset: int = 0) -> dict[str, str]:
    args = ["blkid", "-p", "-o", "export"]
    if offset:
        args += ["-O", str(offset)]
    # rc 2: nothing found. Anything else non-zero is an unreadable device.
    result = _run([*args, str(device)], check=False)
    if result.returncode not in (0, 2):
        raise StickError("cannot read the stick (I/O error)")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def _sysfs(device: Path) -> Path | None:
    name = device.resolve().name
    path = Path("/sys/class/block") / name
    return path if path.exists() else None


def _size_and_ro(device: Path) -> tuple[int, bool]:
    st = device.stat()
    if stat.S_ISBLK(st.st_mode):
        sys = _sysfs(device)
        if sys is None:
            raise StickError(f"{device} has no sysfs entry")
        size = int((sys / "size").read_text()) * 512
        return size, (sys / "ro").read_text().strip() == "1"
    if stat.S_ISREG(st.st_mode):
        # An image file with no write permission bit plays a write-protected stick.
        return st.st_size, not st.st_mode & 0o222
    raise StickError(f"{device} is not a block device")


def _partition_node(device: Path, start_sector: int) -> Path | None:
    """The kernel's node for the partition starting at ``start_sector``, if it made one."""
    sys = _sysfs(device)
    if sys is None:
        return None
    for child in sys.iterdir():
        start = child / "start"
        if start.exists() and int(start.read_text()) == start_sector:
            node = Path("/dev") / child.name
            return node if node.exists() else None
    return None


def probe(device: Path, *, min_size: int) -> Target:
    """The one filesystem to write to, or StickError saying why the stick is refused."""
    size, read_only = _size_and_ro(device)
    info = _blkid(device)
    target: Target | None = None
    if info.get("USAGE") == "filesystem":
        target = Target(device, info.get("TYPE", "?"), size, 0, info.get("LABEL", ""))
    elif info.get("PTTYPE"):
        table = json.loads(_run(["sfdisk", "--json", str(device)]).stdout or "{}")
        pt = table.get("partitiontable", {})
        sector = int(pt.get("sectorsize", 512))
        is_block = stat.S_ISBLK(device.stat().st_mode)
        found: list[Target] = []
        for part in pt.get("partitions", []):
            offset = int(part["start"]) * sector
            pinfo = _blkid(device, offset)
            if pinfo.get("USAGE") != "filesystem":
                continue
            node = _partition_node(device, int(part["start"])) if is_block else None
            found.append(Target(node or device, pinfo.get("TYPE", "?"), int(part["size"]) * sector,
                                0 if node else offset, pinfo.get("LABEL", "")))
        if len(found) > 1:
            raise StickError(f"{len(found)} partitions with a filesystem: use a stick with one")
        target = found[0] if found else None
    if target is None:
        raise StickError("no filesystem: format the stick as FAT32 or exFAT")
    if target.fstype not in SUPPORTED_FS:
        raise StickError(f"unsupported filesystem {target.fstype}: use FAT32, exFAT or ext4")
    if read_only:
        raise StickError("stick is read-only (write-protect switch?)")
    if target.size < min_size:
        raise StickError(f"stick too small ({target.size // 2**20} MiB, need {min_size // 2**20} MiB)")
    return target


def _mount_options(target: Target) -> list[str]:
    opts = ["nosuid", "nodev", "noexec", "noatime"]
    if target.fstype in ("vfat", "exfat"):
        opts += ["uid=0", "gid=0", "umask=077"]  # FAT has no owners: keep the files root's
    if not stat.S_ISBLK(target.device.stat().st_mode) or target.offset:
        opts += ["loop"] + ([f"offset={target.offset}", f"sizelimit={target.size}"] if target.offset else [])
    return opts


def repair_fat(target: Target) -> bool:
    """Check a FAT filesystem and, if a yank left it inconsistent, repair it the way a
    desktop's "scan and fix" does (``fsck.fat -a``). FAT has no journal: without this a
    stick pulled out mid-write can refuse every later write. True if it repaired."""
    if target.fstype != "vfat" or target.offset or not shutil.which("fsck.fat"):
        return False
    if _run(["fsck.fat", "-n", str(target.device)], check=False).returncode == 0:
        return False
    for _ in range(3):  # one pass can leave work for the next (a dir pointing at freed space)
        _run(["fsck.fat", "-a", "-w", str(target.device)], check=False)
        if _run(["fsck.fat", "-n", str(target.device)], check=False).returncode == 0:
            log.warning("repaired the FAT filesystem on %s (pulled out mid-write?)", target.device)
            return True
    raise StickError("stick's FAT is damaged beyond an automatic repair: reformat it")


@contextlib.contextmanager
def mounted(target: Target, mount_dir: Path) -> Iterator[Path]:
    """Mount at a fresh private directory under ``mount_dir``; always unmounts (lazily if
    the stick is gone) and removes the directory."""
    mount_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(mount_dir, 0o700)
    point = mount_dir / f"stick-{secrets.token_hex(4)}"
    point.mkdir(mode=0o700)
    fuse = False
    try:
        result = _run(["mount", "-t", target.fstype, "-o", ",".join(_mount_options(target)),
                       str(target.device), str(point)], check=False)
        if result.returncode != 0:
            unknown = "unknown filesystem type" in result.stderr
            if unknown and target.fstype == "vfat" and not target.offset and shutil.which("fusefat"):
                # This kernel has no vfat: the FUSE driver, same options, same paths.
                _run(["fusefat", "-o", "rw+,nosuid,nodev,noexec", str(target.device), str(point)])
                fuse = True
            else:
                lines = result.stderr.strip().splitlines()
                raise StickError(f"cannot mount the stick: {lines[-1] if lines else 'mount failed'}")
        try:
            yield point
        finally:
            _unmount(point, fuse)
    finally:
        with contextlib.suppress(OSError):
            point.rmdir()


def _unmount(point: Path, fuse: bool) -> None:
    cmd = ["fusermount", "-u"] if fuse else ["umount"]
    if subprocess.run([*cmd, str(point)], capture_output=True, timeout=_TOOL_TIMEOUT).returncode:
        # Yanked or busy: detach now, the kernel finishes when it can.
        subprocess.run([*(["fusermount", "-u", "-z"] if fuse else ["umount", "-l"]), str(point)],
                       capture_output=True, timeout=_TOOL_TIMEOUT)


def explain(exc: OSError) -> StickError:
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return StickError("stick is full: free some space or use another stick")
    if exc.errno == errno.EROFS:
        return StickError("stick is read-only (write-protect switch?)")
    if exc.errno in (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOTCONN):
        return StickError("I/O error: stick removed or failing; plug it in again")
    return StickError(f"write failed: {exc.strerror or type(exc).__name__}")


def write_to_stick(directory: Path, name: str, data: bytes) -> Path:
    """``directory/name`` holding ``data`` or nothing: temp file, fsync, rename, fsync dir.

    A failure at any point leaves no file under ``name`` (at most a dot-temp, which the
    next run's :func:`prune` removes) and raises StickError."""
    final = directory / name
    real_dir(directory)
    try:
        directory.mkdir(exist_ok=True)
        write_atomic(final, data, 0o600)
    except OSError as exc:
        with contextlib.suppress(OSError):
            vfs = os.statvfs(directory if directory.exists() else directory.parent)
            if vfs.f_bavail * vfs.f_frsize < len(data) + 64 * 1024:
                # Some drivers (fusefat) say EPERM when out of space: free space decides.
                raise StickError("stick is full: free some space or use another stick") from None
        raise explain(exc) from None
    return final


def real_dir(directory: Path) -> None:
    """Refuse a stick whose HEARTH is a symlink or a file: a stick (ext4) can hold
    symlinks into the box's own filesystem, and this process is root."""
    try:
        mode = directory.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise StickError(f"{directory.name} on the stick is not a folder: rename or delete it")


def open_regular(path: Path, flags: int = os.O_RDONLY) -> int:
    """An fd for a regular file on the stick, never through a symlink (StickError else)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StickError(f"{path.name} on the stick is a link: refused") from None
        raise explain(exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StickError(f"{path.name} on the stick is not a regular file")
    return fd


def read_back(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes from the stick (at most ``limit``), past the page cache where the
    kernel lets us; never through a symlink."""
    fd = open_regular(path)
    try:
        try:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if limit is not None and size >= limit:
                    break
            return b"".join(chunks)[:limit]
        except OSError as exc:
            raise explain(exc) from None
    finally:
        os.close(fd)


_NAME = re.compile(r"hearth-(?P<box>[0-9a-f]{8})-(?P<ts>\d{8}T\d{6}Z)\.age")


def backups_on(directory: Path, box: str | None = None) -> list[Path]:
    """Hearth backup files in ``directory`` (this box's only, if ``box``), newest first."""
    if not directory.is_dir():
        return []
    if directory.is_symlink():
        return []
    found = []
    for entry in directory.iterdir():
        m = _NAME.fullmatch(entry.name)
        if m and stat.S_ISREG(entry.lstat().st_mode) and (box is None or m["box"] == box):
            found.append((m["ts"], entry))
    return [p for _, p in sorted(found, reverse=True)]


def prune(directory: Path, box: str, keep: int) -> list[Path]:
    """Delete this box's backups beyond the newest ``keep`` and its own leftover temp
    files; any other file is left alone. Returns what was deleted."""
    removed = []
    for old in backups_on(directory, box)[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
            removed.append(old)
    for entry in directory.glob(f".hearth-{box}-*.age.tmp"):
        if _NAME.fullmatch(entry.name[1:-4]):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def backup_name(box: str, now: float | None = None) -> str:
    return f"hearth-{box}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}.age"
