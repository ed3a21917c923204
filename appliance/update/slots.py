"""RAUC's custom bootloader backend for Hearth's A/B system slots, on the boot partition.

The Pi's firmware reads only the FAT boot partition, so both slots share it and differ by
kernel command line (``cmdline-A.txt``: ``root=PARTUUID=...-02 rauc.slot=A``; B: ``-03``).
Which one boots is decided by files there, the way the firmware reads them:

* ``config.txt`` ends with ``include hearth-slot.txt``; that file says ``cmdline=cmdline-X.txt``:
  the **permanent** slot, booted on every ordinary boot;
* ``tryboot.txt``: present only while a new slot waits to be tried. The Pi's firmware reads it
  *instead of* ``config.txt`` when the one-shot tryboot flag is set (``reboot '0 tryboot'``);
  it is ``config.txt`` with the include replaced by ``cmdline=cmdline-Y.txt``. A reset or a
  crash during the try clears the flag, so the next boot is the permanent slot again;
* ``hearth-slot-state.txt``: RAUC's good/bad per slot (``A=good``).

RAUC calls this module (``/usr/lib/hearth/rauc-backend`` runs ``python -m
appliance.update.slots``) with the verbs of its custom backend: ``get-primary``,
``set-primary X``, ``get-state X``, ``set-state X good|bad``, ``get-current``. An install
marks the target bad, writes it, then ``set-primary`` it, which here only arms a try;
``rauc status mark-good`` during the try (the health program) makes it permanent.

Under QEMU there is no firmware flag: :func:`reboot_into_other_slot` writes
``hearth-tryboot.flag`` (a fresh nonce) and the test harness consumes each nonce once
(``firmware-tests/image/vm.py``). Every file is replaced atomically (temp file, fsync,
rename, fsync of the directory), so a power cut leaves the old or the new version.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..durability import fsync_dir, write_atomic

__all__ = ["SLOTS", "BootFiles", "SlotError", "current_slot", "main", "reboot_into_other_slot"]

SLOTS = ("A", "B")
BOOT_DIR = Path("/boot/firmware")
SLOT_FILE = "hearth-slot.txt"
TRYBOOT_FILE = "tryboot.txt"
STATE_FILE = "hearth-slot-state.txt"
#: The emulated one-shot flag (QEMU only; a Pi keeps the flag in the firmware).
QEMU_FLAG_FILE = "hearth-tryboot.flag"
INCLUDE_LINE = f"include {SLOT_FILE}"
_CMDLINE_RE = re.compile(r"^cmdline=cmdline-([AB])\.txt\s*$", re.M)


class SlotError(Exception):
    """A slot name, a boot file or a request that cannot be honoured; the message says why."""


def _check(slot: str) -> str:
    if slot not in SLOTS:
        raise SlotError(f"unknown slot {slot!r} (expected one of {', '.join(SLOTS)})")
    return slot


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode("ascii"), 0o644)


def _remove(path: Path) -> None:
    if path.exists():
        path.unlink()
        fsync_dir(path.parent)


@dataclass(frozen=True)
class BootFiles:
    """The slot-selection files on one boot partition."""

    boot_dir: Path = BOOT_DIR

    def _read_slot(self, name: str) -> str | None:
        path = self.boot_dir / name
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        found = _CMDLINE_RE.findall(text)
        if len(found) != 1:
            raise SlotError(f"{path}: expected one cmdline=cmdline-A.txt or -B.txt line")
        return str(found[0])

    def permanent(self) -> str:
        """The slot every ordinary boot starts."""
        slot = self._read_slot(SLOT_FILE)
        if slot is None:
            raise SlotError(f"no {SLOT_FILE} on {self.boot_dir}: not a Hearth A/B boot partition")
        return slot

    def trying(self) -> str | None:
        """The slot armed for the next try boot, if any."""
        return self._read_slot(TRYBOOT_FILE)

    def states(self) -> dict[str, str]:
        """Each slot's good/bad. A slot the file does not name (the file missing, empty or
        cut short) is good if it is the permanent slot, else bad: a slot is made
        permanent only once it is good, and the FAT under these files has no journal (a
        power cut during an install left this file empty on the emulated card, written
        and fsynced seconds before; reading "bad" for the running slot then made the next
        write record it bad for good)."""
        path = self.boot_dir / STATE_FILE
        try:
            lines = path.read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        try:
            permanent: str | None = self.permanent()
        except SlotError:
            permanent = None
        states = {slot: "good" if slot == permanent else "bad" for slot in SLOTS}
        for line in lines:
            slot, _, state = line.partition("=")
            if slot in SLOTS and state in ("good", "bad"):
                states[slot] = state
        return states

    def _write_states(self, states: dict[str, str]) -> None:
        _write_atomic(self.boot_dir / STATE_FILE, "".join(f"{s}={states[s]}\n" for s in SLOTS))

    def _make_permanent(self, slot: str) -> None:
        _write_atomic(self.boot_dir / SLOT_FILE,
                      f"# Hearth A/B: the permanent slot (appliance/update/slots.py)\n"
                      f"cmdline=cmdline-{slot}.txt\n")
        _remove(self.boot_dir / TRYBOOT_FILE)

    def _arm_try(self, slot: str) -> None:
        config = (self.boot_dir / "config.txt").read_text(encoding="ascii")
        if INCLUDE_LINE not in config.splitlines():
            raise SlotError(f"{self.boot_dir / 'config.txt'} has no '{INCLUDE_LINE}' line")
        tryboot = "\n".join(f"# Hearth A/B: one try of slot {slot} (read instead of config.txt)\n"
                            f"cmdline=cmdline-{slot}.txt" if line == INCLUDE_LINE else line
                            for line in config.splitlines()) + "\n"
        _write_atomic(self.boot_dir / TRYBOOT_FILE, tryboot)

    def init(self, slot: str) -> None:
        """A fresh card: ``slot`` permanent and good, the other bad (empty), no try armed."""
        _check(slot)
        self._make_permanent(slot)
        self._write_states({s: "good" if s == slot else "bad" for s in SLOTS})

    # --- RAUC's verbs --------------------------------------------------------------------

    def get_primary(self) -> str:
        """The slot the next boot prefers: the armed try, else the permanent one."""
        return self.trying() or self.permanent()

    def set_primary(self, slot: str, current: str | None) -> None:
        """After an install: arm one try of ``slot``. The permanent or the running slot
        becomes (or stays) permanent at once: there is nothing to try."""
        _check(slot)
        if slot == self.permanent():
            _remove(self.boot_dir / TRYBOOT_FILE)
        elif slot == current:
            self._make_permanent(slot)
        else:
            self._arm_try(slot)

    def get_state(self, slot: str) -> str:
        return self.states()[_check(slot)]

    def set_state(self, slot: str, state: str, current: str | None) -> None:
        """good: the slot may boot; if it is the one running on a try, it becomes permanent.
        bad: no try of it stays armed; if it was permanent, the other slot (when good) is."""
        _check(slot)
        if state not in ("good", "bad"):
            raise SlotError(f"unknown state {state!r} (good or bad)")
        states = self.states()
        states[slot] = state
        self._write_states(states)
        if state == "good":
            if slot == current and slot != self.permanent():
                self._make_permanent(slot)
            return
        if self.trying() == slot:
            _remove(self.boot_dir / TRYBOOT_FILE)
        other = next(s for s in SLOTS if s != slot)
        if self.permanent() == slot and states[other] == "good":
            self._make_permanent(other)

    def is_try_boot(self, current: str) -> bool:
        """Running a slot that is not the permanent one: only a try boot starts it."""
        return current != self.permanent()


def current_slot(cmdline: Path = Path("/proc/cmdline")) -> str:
    """The running slot, from ``rauc.slot=`` on the kernel command line."""
    m = re.search(r"(?:^|\s)rauc\.slot=(\S+)", cmdline.read_text(encoding="ascii", errors="replace"))
    if not m:
        raise SlotError(f"no rauc.slot= on the kernel command line ({cmdline})")
    return _check(m.group(1))


def running_under_qemu(compatible: Path = Path("/proc/device-tree/compatible")) -> bool:
    """QEMU's ``virt`` machine (the firmware tests), where the tryboot flag is emulated."""
    try:
        return b"linux,dummy-virt" in compatible.read_bytes()
    except OSError:
        return False


Runner = Callable[[Sequence[str]], object]


def _run(argv: Sequence[str]) -> object:
    return subprocess.run(list(argv), check=True)


def reboot_into_other_slot(files: BootFiles | None = None, *, qemu: bool | None = None,
                           run: Runner = _run) -> None:
    """Reboot once into the slot an install armed: ``reboot '0 tryboot'`` on a Pi; under QEMU
    the emulated one-shot flag, then an ordinary reboot. Refused when nothing is armed."""
    files = files or BootFiles()
    target = files.trying()
    if target is None:
        raise SlotError("no slot is armed for a try boot (install a bundle first)")
    if qemu if qemu is not None else running_under_qemu():
        _write_atomic(files.boot_dir / QEMU_FLAG_FILE, secrets.token_hex(16) + "\n")
        run(["systemctl", "reboot"])
    else:
        run(["systemctl", "reboot", "0 tryboot"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rauc-backend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--boot-dir", type=Path, default=Path(os.environ.get("HEARTH_BOOT_DIR", BOOT_DIR)))
    parser.add_argument("--cmdline", type=Path,
                        default=Path(os.environ.get("HEARTH_CMDLINE", "/proc/cmdline")))
    parser.add_argument("verb", choices=["get-primary", "set-primary", "get-state", "set-state",
                                         "get-current", "init", "reboot-into-other-slot"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    files = BootFiles(ns.boot_dir)
    want = {"set-primary": 1, "get-state": 1, "set-state": 2, "init": 1}.get(ns.verb, 0)
    try:
        if len(ns.args) != want:
            raise SlotError(f"{ns.verb} takes {want} argument(s), got {len(ns.args)}")
        current = current_slot(ns.cmdline) if ns.verb not in ("init", "get-primary", "get-state") else None
        if ns.verb == "get-primary":
            print(files.get_primary())
        elif ns.verb == "set-primary":
            files.set_primary(ns.args[0], current)
        elif ns.verb == "get-state":
            print(files.get_state(ns.args[0]))
        elif ns.verb == "set-state":
            files.set_state(ns.args[0], ns.args[1], current)
        elif ns.verb == "get-current":
            print(current)
        elif ns.verb == "init":
            files.init(ns.args[0])
        else:
            reboot_into_other_slot(files)
    except (SlotError, OSError, subprocess.CalledProcessError) as exc:
        print(f"rauc-backend: {ns.verb}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
