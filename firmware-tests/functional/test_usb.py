"""USB backup and restore on real filesystems: vfat and ext4 images made with mkfs, handed to
the agent through its block-device seam (a loop device from losetup, or the image file,
which the same mount code mounts with ``-o loop``; vfat goes through fusefat where the
kernel has no vfat, as on this CI). Yanks, full and odd sticks on purpose; Debian's
``age`` decrypts what the box wrote."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.button.service import _phrase_press
from appliance.config import Config, load_config
from appliance.control import ControlServer, control_request
from appliance.control.messages import Export, Exported, Payload, PhrasePress
from appliance.devices.pages import RecoveryWordsPage, render
from appliance.display.service import _phrase_info, choose_page
from appliance.identity import box_id, derive_secp256k1, load_or_create_hsm_secret, recovery_phrase
from appliance.status import ServiceState, StatusPublisher
from appliance.status.fields import USB_STATE, UsbState
from appliance.usb.agent import RESTORE_FILE, UsbAgent
from appliance.usb.archive import decrypt_backup
from appliance.usb.phrase import is_acknowledged
from appliance.usb.service import UsbService
from appliance.usb.stick import mounted, probe
from functional.framework.util import write_config

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = REPO / ".venv" / "bin" / "appliance"
NAME = re.compile(r"hearth-[0-9a-f]{8}-\d{8}T\d{6}Z\.age")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not Path("/dev/loop-control").exists(),
    reason="mounting stick images needs root and loop devices")


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def base() -> Iterator[Path]:
    # Short: the run_dir holds unix sockets (108-byte path limit).
    path = Path(tempfile.mkdtemp(prefix="hu", dir="/tmp"))
    try:
        yield path
    finally:
        _unmount_all(path)
        shutil.rmtree(path, ignore_errors=True)


def _unmount_all(under: Path) -> None:
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(str(under)):
            subprocess.run(["umount", "-l", point], capture_output=True)


def box(base: Path, name: str = "a", **usb: object) -> Config:
    settings = {"mount_dir": str(base / name / "mnt"), "export_timeout_s": 2.0,
                "restart_after_restore": "", **usb}
    return load_config(None, overrides={
        "hearth": {"data_dir": str(base / name / "data"), "run_dir": str(base / name / "r"),
                   "network": "regtest"},
        "usb": settings})


def image(path: Path, fs: str | None, mib: int = 16) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(mib * 2**20)
    if fs == "vfat":
        subprocess.run(["mkfs.vfat", str(path)], check=True, capture_output=True)
    elif fs:
        subprocess.run([f"mkfs.{fs}", *(["-q", "-F"] if fs.startswith("ext") else []), str(path)],
                       check=True, capture_output=True)
    return path


@contextlib.contextmanager
def loop(img: Path, *, read_only: bool = False) -> Iterator[Path]:
    dev = subprocess.run(["losetup", "-f", "--show", *(["-r"] if read_only else []), str(img)],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@contextlib.contextmanager
def inspect(device: Path, cfg: Config) -> Iterator[Path]:
    """Look at the stick as a person would after the box is done with it."""
    with mounted(probe(device, min_size=1), Path(cfg.usb.mount_dir).with_name("look")) as root:
        yield root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def phrase_of(cfg: Config) -> str:
    return " ".join(recovery_phrase(load_or_create_hsm_secret(cfg.hsm_secret_file)))


def age_decrypt(path: Path, phrase: str, out: Path) -> bytes:
    """Debian's age, which reads the passphrase from the terminal: give it a pty."""
    master, slave = os.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(["age", "--decrypt", "-o", str(out), str(path)], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=controlling_tty)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"passphrase" not in seen.lower() and time.monotonic() < deadline:
            seen += os.read(master, 1024)
        os.write(master, phrase.encode() + b"\n")
        with contextlib.suppress(OSError):  # EIO once age exits and the pty closes
            while chunk := os.read(master, 1024):
                seen += chunk
        assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return out.read_bytes()


def tar_members(payload: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def no_mounts_left(cfg: Config) -> bool:
    mounts = Path("/proc/mounts").read_text()
    left = list(Path(cfg.usb.mount_dir).iterdir()) if Path(cfg.usb.mount_dir).exists() else []
    return cfg.usb.mount_dir not in mounts and not left


# --------------------------------------------------------------------------- backups

def test_ext4_loop_device_backup_decrypts_with_debian_age(base: Path) -> None:
    cfg = box(base)
    img = image(base / "stick.img", "ext4")
    with loop(img) as dev:
        with inspect(dev, cfg) as root:
            (root / "notes.txt").write_text("the owner's file")
        outcome = UsbAgent(cfg).handle(dev)
        assert outcome.ok and outcome.message == "Backup OK - remove stick", outcome
        assert no_mounts_left(cfg)
        with inspect(dev, cfg) as root:
            files = sorted(p.name for p in (root / "HEARTH").iterdir())
            assert len(files) == 1 and NAME.fullmatch(files[0]) and box_id(
                load_or_create_hsm_secret(cfg.hsm_secret_file)) in files[0]
            assert (root / "notes.txt").read_text() == "the owner's file"
            copy = base / "copy.age"
            shutil.copy(root / "HEARTH" / files[0], copy)
    secret = load_or_create_hsm_secret(cfg.hsm_secret_file)
    assert secret not in copy.read_bytes()
    members = tar_members(age_decrypt(copy, phrase_of(cfg), base / "out.tar"))
    assert members["hsm_secret"] == secret
    meta = json.loads(members["metadata.json"])
    assert meta["box_id"] == box_id(secret) and meta["backup_agent"] == "none"
    assert "backup_agent_error" in meta


@pytest.mark.slow
def test_vfat_image_keeps_newest_n_and_never_touches_other_files(base: Path) -> None:
    cfg = box(base, keep=2)
    img = image(base / "stick.img", "vfat")
    with inspect(img, cfg) as root:
        (root / "HEARTH").mkdir()
        (root / "HEARTH" / "hearth-00000000-20200101T000000Z.age").write_bytes(b"another box's")
        (root / "HEARTH" / "my notes.txt").write_text("keep me")
        (root / "photo.jpg").write_bytes(b"\xff\xd8" * 100)
    for _ in range(3):
        outcome = UsbAgent(cfg).handle(img)
        assert outcome.ok, outcome
    with inspect(img, cfg) as root:
        names = sorted(p.name for p in (root / "HEARTH").iterdir())
        ours = [n for n in names if box_id(load_or_create_hsm_secret(cfg.hsm_secret_file)) in n]
        assert len(ours) == 2
        assert "hearth-00000000-20200101T000000Z.age" in names and "my notes.txt" in names
        assert (root / "photo.jpg").read_bytes() == b"\xff\xd8" * 100
        for name in ours:
            assert decrypt_backup((root / "HEARTH" / name).read_bytes(), phrase_of(cfg)).hsm_secret
    fsck = subprocess.run(["fsck.vfat", "-n", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def _two_partitions(path: Path) -> Path:
    image(path, None, 40)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: dos\n,16M,c\n,,83\n", text=True,
                   check=True, capture_output=True)
    subprocess.run(["mkfs.vfat", "--offset", "2048", str(path), str(16 * 1024)], check=True,
                   capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={(2048 + 32768) * 512}", str(path),
                    "20M"], check=True, capture_output=True)
    return path


@pytest.mark.parametrize("kind, message", [
    ("none", "no filesystem"),
    ("read-only", "read-only"),
    ("two-partitions", "2 partitions with a filesystem"),
    ("too-small", "too small"),
    ("minix", "unsupported filesystem minix"),
])
def test_odd_sticks_are_refused_untouched(base: Path, kind: str, message: str) -> None:
    cfg = box(base)
    img = {"none": lambda p: image(p, None),
           "read-only": lambda p: image(p, "ext4"),
           "two-partitions": _two_partitions,
           "too-small": lambda p: image(p, "ext4", 4),
           "minix": lambda p: image(p, "minix")}[kind](base / "stick.img")
    before = sha(img)
    with loop(img, read_only=kind == "read-only") as dev:
        outcome = UsbAgent(cfg).handle(dev)
    assert not outcome.ok and message in outcome.message, outcome
    assert sha(img) == before and no_mounts_left(cfg)


def test_one_partition_in_a_table_is_found(base: Path) -> None:
    img = image(base / "stick.img", None, 24)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: dos\n,,c\n", text=True, check=True,
                   capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={2048 * 512}", str(img), "20M"],
                   check=True, capture_output=True)
    target = probe(img, min_size=2**20)
    assert target.fstype == "ext4" and target.offset == 2048 * 512


def test_full_stick_fails_cleanly_and_the_next_plug_in_works(base: Path) -> None:
    cfg = box(base, min_size_mib=8)
    img = image(base / "stick.img", "ext4", 8)
    with loop(img) as dev:
        with inspect(dev, cfg) as root:
            (root / "HEARTH").mkdir()
            subprocess.run(["dd", "if=/dev/zero", f"of={root / 'filler'}", "bs=64k"], capture_output=True)
        outcome = UsbAgent(cfg).handle(dev)
        assert not outcome.ok and outcome.message.startswith("stick is full"), outcome
        with inspect(dev, cfg) as root:
            assert list((root / "HEARTH").iterdir()) == []  # no partial file, no temp file
            (root / "filler").unlink()
        outcome = UsbAgent(cfg).handle(dev)
        assert outcome.ok, outcome
        assert no_mounts_left(cfg)


def _fuse_pid(mount_dir: Path) -> int | None:
    """The fusefat process the agent started for a mount under ``mount_dir``."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"fusefat") and any(a.startswith(str(mount_dir).encode()) for a in argv):
                    return int(proc.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("fusefat"), reason="the yank is simulated by killing fusefat")
def test_yank_mid_write_leaves_no_corrupt_latest_and_next_plug_in_works(base: Path) -> None:
    cfg = box(base, min_size_mib=8)
    if "vfat" in Path("/proc/filesystems").read_text():
        pytest.skip("the kernel mounts vfat itself here: no FUSE process to yank")
    export = cfg.backup_export_file
    export.parent.mkdir(parents=True)
    export.write_bytes(os.urandom(24 * 2**20))  # a big payload: a long write to interrupt
    img = image(base / "stick.img", "vfat", 64)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(UsbAgent(cfg).handle(img)))
    worker.start()
    mount_dir = Path(cfg.usb.mount_dir)
    deadline = time.monotonic() + 60
    yanked = False
    while time.monotonic() < deadline and worker.is_alive() and not yanked:
        if list(mount_dir.glob("*/HEARTH/.hearth-*.tmp")):
            pid = _fuse_pid(mount_dir)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)  # the stick is gone, mid-write
                yanked = True
        time.sleep(0.005)
    worker.join(120)
    assert yanked, "the write finished before the yank"
    outcome = result[0]
    assert not outcome.ok and "I/O error" in outcome.message, outcome  # type: ignore[attr-defined]
    assert no_mounts_left(cfg)
    # Plugged in again: every hearth-*.age on it is complete; the agent writes a good one.
    outcome = UsbAgent(cfg).handle(img)
    assert outcome.ok, outcome  # type: ignore[attr-defined]
    with inspect(img, cfg) as root:
        names = [p.name for p in (root / "HEARTH").iterdir()]
        assert not [n for n in names if n.endswith(".tmp")]  # the leftover temp was pruned
        for name in names:
            back = decrypt_backup((root / "HEARTH" / name).read_bytes(), phrase_of(cfg))
            assert back.agent_export == export.read_bytes()


# --------------------------------------------------------------------------- restore

def _config_file(cfg: Config, base: Path, name: str) -> Path:
    return write_config(base / f"{name}.toml", {"hearth": {
        "network": "regtest", "data_dir": cfg.hearth.data_dir, "run_dir": cfg.hearth.run_dir}})


def _backup_file(base: Path, cfg: Config) -> Path:
    img = image(base / "src.img", "ext4")
    with loop(img) as dev:
        assert UsbAgent(cfg).handle(dev).ok
        with inspect(dev, cfg) as root:
            [src] = (root / "HEARTH").iterdir()
            copy = base / src.name
            shutil.copy(src, copy)
    return copy


def _restore(config: Path, file: Path, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(APPLIANCE), "restore", str(file), "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_restore_cli_round_trip_same_identity_and_refusals(base: Path) -> None:
    a = box(base, "a")
    clients = a.paired_clients_file
    clients.parent.mkdir(parents=True)
    clients.write_text('{"clients": {"02ab": "phone"}}')
    agent_data = a.backup_export_file
    agent_data.parent.mkdir(parents=True)
    agent_data.write_bytes(b"not an export the backup service accepts")
    backup = _backup_file(base, a)
    secret = load_or_create_hsm_secret(a.hsm_secret_file)
    phrase_file = base / "phrase.txt"
    phrase_file.write_text(phrase_of(a).upper() + "\n")  # case and spacing do not matter

    fresh = box(base, "b")
    wrong = _restore(_config_file(fresh, base, "b"), backup, "--phrase-file", "-",
                     stdin=" ".join(recovery_phrase(bytes(32))) + "\n")
    assert wrong.returncode == 1 and "wrong recovery phrase" in wrong.stderr
    assert not fresh.hsm_secret_file.exists()
    done = _restore(_config_file(fresh, base, "b"), backup, "--phrase-file", str(phrase_file))
    assert done.returncode == 0, done.stderr
    restored = load_or_create_hsm_secret(fresh.hsm_secret_file)
    assert restored == secret and oct(fresh.hsm_secret_file.stat().st_mode & 0o777) == "0o600"
    assert derive_secp256k1(restored, "noise-static") == derive_secp256k1(secret, "noise-static")
    assert derive_secp256k1(restored, "tower-key") == derive_secp256k1(secret, "tower-key")
    assert fresh.paired_clients_file.read_text() == clients.read_text()
    # refused by the backup service's importer (or none on this build): kept, never lost
    assert fresh.backup_import_file.read_bytes() == agent_data.read_bytes()
    assert is_acknowledged(fresh)
    assert secret.hex() not in done.stdout + done.stderr

    other = box(base, "c")
    own = load_or_create_hsm_secret(other.hsm_secret_file)
    refused = _restore(_config_file(other, base, "c"), backup, "--phrase-file", str(phrase_file))
    assert refused.returncode == 1 and "another identity" in refused.stderr
    assert load_or_create_hsm_secret(other.hsm_secret_file) == own
    forced = _restore(_config_file(other, base, "c"), backup, "--phrase-file", str(phrase_file), "--force")
    assert forced.returncode == 0 and load_or_create_hsm_secret(other.hsm_secret_file) == secret


@pytest.mark.slow
def test_first_boot_restore_from_a_stick_with_hearth_restore_txt(base: Path) -> None:
    a = box(base, "a")
    backup = _backup_file(base, a)
    secret = load_or_create_hsm_secret(a.hsm_secret_file)
    img = image(base / "restore.img", "vfat")
    cfg = box(base, "b")
    with inspect(img, cfg) as root:
        (root / "HEARTH").mkdir()
        shutil.copyfile(backup, root / "HEARTH" / backup.name)
        # an older backup of some other box that this phrase does not open
        (root / "HEARTH" / "hearth-11111111-20200101T000000Z.age").write_bytes(
            backup.read_bytes()[:200])
        (root / RESTORE_FILE).write_text(f"  {phrase_of(a)}\n")
    own = load_or_create_hsm_secret(cfg.hsm_secret_file)  # a fresh box made its own at boot
    assert own != secret and not is_acknowledged(cfg)
    outcome = UsbAgent(cfg).handle(img)
    assert outcome.ok and outcome.kind == "restore" and box_id(secret) in outcome.message, outcome
    assert outcome.box == box_id(secret)
    assert load_or_create_hsm_secret(cfg.hsm_secret_file) == secret and is_acknowledged(cfg)
    with inspect(img, cfg) as root:
        assert not (root / RESTORE_FILE).exists()
        assert (root / "HEARTH" / backup.name).exists()
    # the phrase's bytes are gone from the image, not just the directory entry (FAT: overwritten)
    assert phrase_of(a).encode() not in img.read_bytes()

    # A set-up box never restores over itself from a stick.
    with inspect(img, cfg) as root:
        (root / RESTORE_FILE).write_text(" ".join(recovery_phrase(bytes(32))))
    outcome = UsbAgent(cfg).handle(img)
    assert not outcome.ok and "box is set up" in outcome.message
    assert load_or_create_hsm_secret(cfg.hsm_secret_file) == secret


# --------------------------------------------------------------------------- the service

@pytest.mark.slow
def test_service_uses_the_backup_export_then_falls_back_and_pages_the_phrase(base: Path) -> None:
    cfg = box(base)
    img = image(base / "stick.img", "ext4")
    export_file = cfg.backup_export_file

    async def export(req: Export) -> Exported:
        # the backup service's contract: write export.bin atomically, return its path
        export_file.parent.mkdir(parents=True, exist_ok=True)
        export_file.write_bytes(b"LIVE-EXPORT")
        return Exported(path=str(export_file), streams=1)

    async def scenario() -> list[dict[str, object]]:
        assert not _phrase_press(cfg)  # no usb service: a press is a pairing press
        results = []
        backup_server = ControlServer(cfg.control_endpoint("backup"), {Export: export})
        serving = asyncio.create_task(backup_server.serve())
        async with StatusPublisher(cfg.hearth.run_dir, "usb") as bus:
            service = UsbService(cfg, bus)
            task = asyncio.create_task(service.run())
            try:
                ask = control_request
                words = phrase_of(cfg).split()
                for screen in range(3):
                    # what the display does each frame: the bus says a phrase is up, the
                    # words come over the control socket, the page shows them whole
                    states = {"usb": ServiceState(bus.status, 0.1, False)}
                    info = await asyncio.to_thread(_phrase_info, cfg, states)
                    page, _, _ = choose_page(states, Payload("HEARTH:X"), 0.0, phrase=info)
                    assert isinstance(page, RecoveryWordsPage), page
                    assert page.words == tuple(words[4 * screen:4 * screen + 4])
                    assert render(page).getbbox() is not None
                    assert not is_acknowledged(cfg)
                    # what the button service does with a short press
                    assert await asyncio.to_thread(_phrase_press, cfg)
                assert is_acknowledged(cfg) and bus.status.counters["phrase_first"] == -1
                states = {"usb": ServiceState(bus.status, 0.1, False)}
                assert await asyncio.to_thread(_phrase_info, cfg, states) is None
                assert not await asyncio.to_thread(_phrase_press, cfg)  # the pairing button again
                with loop(img) as dev:
                    results.append(await asyncio.to_thread(
                        ask, cfg.control_endpoint("usb"), "backup", 120, device=str(dev)))
                    assert bus.status.counters[USB_STATE] == UsbState.OK
                    serving.cancel()  # the backup service goes down
                    await asyncio.gather(serving, return_exceptions=True)
                    results.append(await asyncio.to_thread(
                        ask, cfg.control_endpoint("usb"), "backup", 120, device=str(dev)))
                    with inspect(dev, cfg) as root:
                        files = sorted((root / "HEARTH").iterdir())
                        results.extend(decrypt_backup(f.read_bytes(), phrase_of(cfg)).metadata
                                       | {"export": decrypt_backup(f.read_bytes(), phrase_of(cfg))
                                          .agent_export} for f in files)
                    service.removed(dev)
                    assert bus.status.counters[USB_STATE] == UsbState.IDLE
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return results

    first, second, meta_old, meta_new = asyncio.run(scenario())
    assert first["ok"] and second["ok"]
    assert meta_old["backup_agent"] == "live" and meta_old["export"] == b"LIVE-EXPORT"
    assert meta_new["backup_agent"] == "last-export" and meta_new["export"] == b"LIVE-EXPORT"
    assert "not running" in str(meta_new["backup_agent_error"]) or "no answer" in str(
        meta_new["backup_agent_error"])


@pytest.mark.slow
def test_full_stick_with_older_backups_of_this_box_makes_room(base: Path) -> None:
    cfg = box(base, min_size_mib=8)
    export = cfg.backup_export_file
    export.parent.mkdir(parents=True)
    export.write_bytes(os.urandom(2 * 2**20))  # each backup ~2 MiB
    img = image(base / "stick.img", "ext4", 8)
    with loop(img) as dev:
        for _ in range(2):
            assert UsbAgent(cfg).handle(dev).ok
        with inspect(dev, cfg) as root:
            old = sorted(p.name for p in (root / "HEARTH").iterdir())
            vfs = os.statvfs(root)  # leave ~1 MiB free: less than one backup
            subprocess.run(["fallocate", "-l", str(vfs.f_bavail * vfs.f_frsize - 2**20),
                            str(root / "filler")], check=True)
        outcome = UsbAgent(cfg).handle(dev)
        assert outcome.ok, outcome
        with inspect(dev, cfg) as root:
            now = sorted(p.name for p in (root / "HEARTH").iterdir())
            assert len(now) == 2 and now[0] == old[1] and now[1] not in old  # the oldest made room
            assert (root / "filler").exists()


def test_symlinks_on_a_stick_never_lead_into_the_box(base: Path) -> None:
    cfg = box(base)
    victim = base / "box-file"
    victim.write_text("the box's own data")
    img = image(base / "stick.img", "ext4")
    with loop(img) as dev:
        with inspect(dev, cfg) as root:
            (root / RESTORE_FILE).symlink_to(victim)
        outcome = UsbAgent(cfg).handle(dev)
        assert not outcome.ok and "is a link" in outcome.message, outcome
        with inspect(dev, cfg) as root:
            (root / RESTORE_FILE).unlink()
            (root / "HEARTH").symlink_to(base)
        outcome = UsbAgent(cfg).handle(dev)
        assert not outcome.ok and "not a folder" in outcome.message, outcome
    assert victim.read_text() == "the box's own data"
    assert sorted(p.name for p in base.iterdir()) == ["a", "box-file", "stick.img"]


@pytest.mark.slow
def test_hearth_usb_program_and_the_usb_backup_command(base: Path) -> None:
    """`appliance run usb` as supervisord starts it, and `appliance usb backup DEVICE`."""
    cfg = box(base)
    config = _config_file(cfg, base, "a")
    config.write_text(config.read_text() + f'[usb]\nmount_dir = "{cfg.usb.mount_dir}"\n'
                      'export_timeout_s = 2.0\nrestart_after_restore = ""\n')
    log = open(base / "usb.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([str(APPLIANCE), "run", "usb", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    try:
        ctl = cfg.hearth.run_dir / "usb.ctl"
        deadline = time.monotonic() + 30
        while not ctl.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ctl.exists(), (base / "usb.log").read_text()
        img = image(base / "stick.img", "ext4")
        with loop(img) as dev:
            done = subprocess.run([str(APPLIANCE), "usb", "backup", str(dev), "--config", str(config)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "Backup OK" in done.stdout, done.stdout + done.stderr
            refused = subprocess.run([str(APPLIANCE), "usb", "backup", str(base / "nothing"),
                                      "--config", str(config)], capture_output=True, text=True, timeout=60)
            assert refused.returncode == 1 and "no device" in refused.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, (base / "usb.log").read_text()



# --------------------------------------------------------------------------- udev

def _murmur2(data: bytes) -> int:
    """MurmurHash2 (seed 0) as libudev hashes subsystems and tags for its socket filter."""
    m, h, i = 0x5BD1E995, len(data), 0
    while len(data) - i >= 4:
        k = (struct.unpack_from("<I", data, i)[0] * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
        i += 4
    rest = data[i:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def udev_broadcast(action: str, dev: Path, tag: str, **extra: str) -> None:
    """What udevd multicasts after its rules ran (here: ours tagging a USB disk), in
    libudev's wire format: the "libudev" header with the subsystem/devtype hashes and the
    tag bloom filter, then KEY=value properties. The agent's pyudev monitor receives it
    through libudev's own code (socket filter, credential check, tag match)."""
    bloom = 0
    for shift in (0, 6, 12, 18):
        bloom |= 1 << ((_murmur2(tag.encode()) >> shift) & 63)
    devpath = "/" + os.path.relpath(os.path.realpath(f"/sys/class/block/{dev.name}"), "/sys")
    props = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": "block", "DEVTYPE": "disk",
             "DEVNAME": str(dev), "SEQNUM": "1", "TAGS": f":{tag}:", "CURRENT_TAGS": f":{tag}:",
             "ID_BUS": "usb", "ID_USB_DRIVER": "usb-storage", "USEC_INITIALIZED": "1", **extra}
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in props.items())
    header = (b"libudev\0" + struct.pack(">I", 0xFEEDCAFE) + struct.pack("<III", 40, 40, len(body))
              + struct.pack(">IIII", _murmur2(b"block"), _murmur2(b"disk"), bloom >> 32,
                            bloom & 0xFFFFFFFF))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15) as sock:  # NETLINK_KOBJECT_UEVENT
        sock.bind((0, 0))
        sock.sendto(header + body, (0, 2))  # multicast group 2: udev's (1 is the kernel's)


@pytest.mark.slow
def test_udev_add_and_remove_reach_the_agent_through_pyudev(base: Path) -> None:
    cfg = box(base, settle_s=0.0)
    img = image(base / "stick.img", "ext4")

    async def wait_state(bus: StatusPublisher, state: UsbState, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while bus.status.counters.get(USB_STATE) != state:
            assert time.monotonic() < deadline, bus.status
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        async with StatusPublisher(cfg.hearth.run_dir, "usb") as bus:
            service = UsbService(cfg, bus)
            task = asyncio.create_task(service.run())
            try:
                await asyncio.sleep(0.5)  # the monitor is listening
                with loop(img) as dev:
                    udev_broadcast("add", dev, "some_other_tag")  # not ours: ignored
                    await asyncio.sleep(1.0)
                    assert bus.status.counters[USB_STATE] == UsbState.IDLE
                    udev_broadcast("add", dev, "hearth_usb")
                    await wait_state(bus, UsbState.OK)
                    assert "Backup OK" in bus.status.detail
                    await service.cmd_phrase_press(PhrasePress())  # a press while the result is up
                    assert bus.status.counters["backups_ok"] == 1
                    assert bus.status.counters[USB_STATE] == UsbState.OK
                    udev_broadcast("remove", dev, "hearth_usb")
                    await wait_state(bus, UsbState.IDLE)
                    udev_broadcast("change", dev, "hearth_usb")  # not a new medium: ignored
                    await asyncio.sleep(1.0)
                    assert bus.status.counters[USB_STATE] == UsbState.IDLE
                    # a card put into a USB card reader: the disk changes, it is not added
                    udev_broadcast("change", dev, "hearth_usb", DISK_MEDIA_CHANGE="1")
                    await wait_state(bus, UsbState.OK)
                    assert bus.status.counters["backups_ok"] == 2
                    with inspect(dev, cfg) as root:
                        assert len(list((root / "HEARTH").iterdir())) == 2
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
