"""Real RAUC for the update tests: a throwaway signing key, real bundles, a real service.

* :func:`make_key` makes a self-signed certificate and key with ``openssl`` (as
  ``./build.sh bundle`` does on first use), :func:`make_bundle` a bundle with ``rauc
  bundle`` (``plain`` format unless asked: ``verity`` needs device-mapper to install,
  which this CI's kernel does not offer; ``rauc info`` reads both).
* :class:`RaucSystem` runs ``rauc service`` as on the box, with the image's slot layout
  (``rootfs.0``/``A``, ``rootfs.1``/``B``, ext4, ``bootloader=custom``) on two small
  file-backed ext4 slots and a shell backend keeping the boot state in files. D-Bus:
  a private bus from ``dbus-daemon`` given to rauc as its *system* bus through
  ``DBUS_SYSTEM_BUS_ADDRESS`` (GDBus honours it), so nothing of the host is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

COMPATIBLE = "hearth-arm64"

_BACKEND = """#!/bin/sh
# The boot state of the emulated slots: primary and good/bad per bootname, in files.
D={state}
echo "$@" >> "$D/calls"
case "$1" in
  get-primary) cat "$D/primary" 2>/dev/null || echo A ;;
  set-primary) echo "$2" > "$D/primary" ;;
  get-state) cat "$D/state.$2" 2>/dev/null || echo good ;;
  set-state) echo "$3" > "$D/state.$2" ;;
  get-current) echo {booted} ;;
  *) exit 1 ;;
esac
"""


def next_version(version: str) -> str:
    """``0.1.0`` -> ``0.1.1``: the update a test brings to a box running ``version``."""
    *head, last = version.split(".")
    return ".".join([*head, str(int(last) + 1)])


def have_rauc() -> bool:
    return all(shutil.which(p) for p in ("rauc", "openssl", "mksquashfs"))


def can_install() -> bool:
    """``rauc install`` here needs root (loop mount of the bundle) and a D-Bus daemon."""
    return have_rauc() and os.geteuid() == 0 and bool(shutil.which("dbus-daemon")) \
        and Path("/dev/loop-control").exists()


@dataclass(frozen=True)
class Key:
    cert: Path
    key: Path


def make_key(directory: Path, name: str = "hearth test") -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    stem = name.replace(" ", "-")
    key, cert = directory / f"{stem}.key.pem", directory / f"{stem}.cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "30", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    return Key(cert, key)


def make_bundle(out: Path, key: Key, *, version: str, compatible: str = COMPATIBLE,
                fmt: str = "plain", image_bytes: bytes | None = None) -> Path:
    """A real bundle with one ext4 image for ``rootfs`` carrying a marker file's worth of
    difference (the version), so slot contents can be told apart."""
    work = out.parent / f".{out.name}.d"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={fmt}\n\n"
        "[image.rootfs]\nfilename=rootfs.ext4\n")
    image = work / "rootfs.ext4"
    if image_bytes is None:
        tree = work / "tree"
        tree.mkdir()
        (tree / "hearth-release").write_text(f"VERSION={version}\n")
        # incompressible filler: a verity bundle's squashfs must exceed one 4 KiB block
        (tree / "filler").write_bytes(os.urandom(64 * 1024))
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "2M"], check=True,
                       capture_output=True)
        shutil.rmtree(tree)
    else:
        image.write_bytes(image_bytes)
    out.unlink(missing_ok=True)
    subprocess.run(["rauc", "bundle", f"--cert={key.cert}", f"--key={key.key}", str(work), str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(work)
    return out


class RaucSystem:
    """``rauc service`` with the box's slot layout on files, on a private bus."""

    def __init__(self, base: Path, keyring: Path, *, booted: str = "A") -> None:
        self.base = base
        self.keyring = keyring
        self.booted = booted
        self.state = base / "boot-state"
        self.conf = base / "system.conf"
        self.slots = {"A": base / "slotA.img", "B": base / "slotB.img"}
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []

    def write(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        for slot in self.slots.values():
            if not slot.exists():
                subprocess.run(["mkfs.ext4", "-q", "-F", str(slot), "4M"], check=True, capture_output=True)
        backend = self.base / "backend.sh"
        backend.write_text(_BACKEND.format(state=self.state, booted=self.booted))
        backend.chmod(0o755)
        (self.base / "mnt").mkdir(exist_ok=True)
        self.conf.write_text(
            f"[system]\ncompatible={COMPATIBLE}\nbootloader=custom\n"
            f"data-directory={self.base / 'data'}\n\n"
            f"[keyring]\npath={self.keyring}\n\n"
            f"[handlers]\nbootloader-custom-backend={backend}\n\n"
            f"[slot.rootfs.0]\ndevice={self.slots['A']}\ntype=ext4\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={self.slots['B']}\ntype=ext4\nbootname=B\n")

    def start(self, timeout: float = 30.0) -> None:
        self.write()
        bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._procs.append(bus)
        assert bus.stdout is not None
        address = bus.stdout.readline().decode().strip()
        if not address:
            raise RuntimeError("dbus-daemon printed no address")
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}
        log = open(self.base / "rauc-service.log", "ab")  # noqa: SIM115 (lives with the process)
        service = subprocess.Popen(["rauc", f"--conf={self.conf}", f"--mount={self.base / 'mnt'}",
                                    "service", f"--override-boot-slot={self.booted}"],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._procs.append(service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.poll() is not None:
                raise RuntimeError(f"rauc service exited: {(self.base / 'rauc-service.log').read_text()}")
            if subprocess.run(["rauc", "status", "--output-format=json"], env=self.env,
                              capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("rauc service did not answer on its bus")

    def set_state(self, bootname: str, state: str) -> None:
        (self.state / f"state.{bootname}").write_text(f"{state}\n")

    def set_primary(self, bootname: str) -> None:
        (self.state / "primary").write_text(f"{bootname}\n")

    def calls(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return (self.state / "calls").read_text().splitlines()
        return []

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()


class Reboots:
    """The reboot seam in tests: counts what would have rebooted this machine."""

    def __init__(self) -> None:
        self.count = 0

    def reboot(self) -> None:
        self.count += 1


def two_keys(base: Path) -> tuple[Key, Key]:
    """Hearth's (the box's keyring) and someone else's."""
    return make_key(base, "hearth test"), make_key(base, "someone else")


def running_system(base: Path, keyring: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RaucSystem]:
    """A fixture's body: a started :class:`RaucSystem` whose bus the test's rauc clients use."""
    rauc = RaucSystem(base, keyring)
    base.mkdir()
    try:
        rauc.start()
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", rauc.env["DBUS_SYSTEM_BUS_ADDRESS"])
        yield rauc
    finally:
        rauc.stop()
