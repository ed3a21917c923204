"""A second card beside the shared box: its own VM, its own first boot, then the update
tests that need nothing from the shared box, in a thread of their own.

The shared box's tests are one long chain of state (identity restored, paired, blocks,
cuts, then the update that must keep all of it); these need only *a* box, so they run on
this one while the shared box is busy with tests that mostly wait (card wear's phases
are paced by the clock and count only the shared card's bytes; the cuts wait for boots).
Two emulated boxes on two cores are slower each, and the run as a whole is ~15 min
shorter. Steps, in order; each is collected by its own test in test_second_card.py:

1. ``FIRST_BOOT``: the owner's ``hearth.toml`` has a bad value: first boot refuses it with
   the reason on the console (and the OLED: not visible here, the refused file was to
   choose the simulated panel), changes nothing, leaves the file on the boot partition,
   starts no service. The owner fixes the file on the card and powers on: first boot
   takes it (merged over the image's settings) and is cut while it makes the box's keys.
   Powered on again: first boot runs again from the start and completes; the box is ready.
2. ``INSTALL_CUT``: a power cut in the middle of ``rauc install``: the old slot boots, the
   half-written one is marked bad.
3. ``ROLLBACK``: a bundle whose indexer cannot start (X+2) is installed and tried; it is
   not healthy within its set time, marked bad, and the box boots back into the slot it
   came from by itself, with its state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import __version__

from .checks import BOOT_TIMEOUT, fsck_results, wait_ready
from .conftest import GUEST_CONFIG, image_path
from .updates import BACKEND, BROKEN_TIMEOUT_S, Bundles, boot_state, bump, install, reboot_into_other_slot
from .vm import GUEST_APPLIANCE, GUEST_CLI, VM

BAD_CONFIG = GUEST_CONFIG + '\n[node]\ndbcache_mib = "lots"\n'
#: The whole second card: five boots, an install and a half, a health wait (~20 min alone).
SECOND_CARD_TIMEOUT_S = 3600.0

FIRST_BOOT = "refused config, then a cut during first boot"
INSTALL_CUT = "a power cut during an install"
ROLLBACK = "a failed update rolled back"


def first_boot(vm: VM, bundles: Bundles) -> list[str]:
    found = [f"QEMU started (bad config), console {vm.console}"]
    m = vm.wait_for(r"hearth-firstboot: hearth.toml on the boot partition REFUSED: (.*?)\s*$",
                    BOOT_TIMEOUT, fail=r"hearth-firstboot: done")
    assert m.group(1) == "node.dbcache_mib: expected int, got 'lots'", m.group(0)
    vm.wait_for(r"hearth-firstboot: nothing was changed; fix the file", 60)
    time.sleep(20)  # supervisord must not start on settings the owner did not ask for
    assert "hearth: ready" not in vm.console_text() and "box key" not in vm.console_text()
    found.append(f"refused {time.time() - vm.started:.0f} s after power on: {m.group(1)}")
    vm.power_cut()
    assert vm.read_boot_file("hearth.toml") == BAD_CONFIG.encode(), "the refused file was not left"

    vm.edit_card({"hearth.toml": GUEST_CONFIG.encode()})
    vm.boot_again()
    vm.wait_for(r"hearth-firstboot: using hearth.toml from the boot partition", BOOT_TIMEOUT)
    vm.wait_for(r"hearth-firstboot: box key [0-9a-f]{66}", BOOT_TIMEOUT)
    vm.power_cut()  # first boot has made the keys, not yet bitcoin.conf
    found.append("power cut during first boot, after the box's keys")

    vm.boot_again()
    fsck = fsck_results(vm)
    assert "NOT CLEAN" not in " ".join(fsck.values()), fsck
    vm.wait_for(r"hearth-firstboot: done\b", BOOT_TIMEOUT, fail=r"hearth-firstboot\.service: Failed.*")
    wait_ready(vm)
    vm.wait_ssh(300)
    conf = vm.ssh("cat /etc/hearth/hearth.toml")
    assert 'network = "regtest"' in conf and "auto_size = true" in conf
    assert vm.ssh("stat -c '%a %U' /var/lib/hearth/hsm_secret").strip() == "600 hearth"
    assert "regtest" in vm.ssh(f"{GUEST_CLI} getblockchaininfo")
    found.append(f"after the cut during first boot: fsck {fsck}; ready; "
                 f"boot state: {' '.join(boot_state(vm).split())}")
    return found


def install_cut(vm: VM, bundles: Bundles) -> list[str]:
    vm.push(bundles.next, "/data/update.raucb")
    vm.ssh("nohup rauc install /data/update.raucb > /data/install.log 2>&1 &")
    deadline = time.monotonic() + 900
    while "Copying image" not in (log := vm.ssh("cat /data/install.log", check=False)):
        assert time.monotonic() < deadline and "failed" not in log.lower(), log
        time.sleep(2)
    time.sleep(5)  # into the slot's write
    vm.power_cut()
    vm.boot_again()
    assert vm.slot == "A", "the firmware did not boot the old slot"
    wait_ready(vm)
    vm.wait_ssh(300)
    status = json.loads(vm.ssh("rauc status --output-format=json"))
    assert status["booted"] == "A"
    assert vm.ssh(f"{BACKEND} get-state B").strip() == "bad"
    # The running slot stays good even when the cut took the state file with it (FAT).
    assert vm.ssh(f"{BACKEND} get-state A").strip() == "good"
    assert vm.ssh(f"{BACKEND} get-primary").strip() == "A"
    vm.ssh("rm -f /data/update.raucb /data/install.log")
    return ["power cut during the install: back on slot A; " + log.strip().splitlines()[-1],
            f"boot state after it: {' '.join(boot_state(vm).split())}"]


def rollback(vm: VM, bundles: Bundles) -> list[str]:
    running = vm.slot
    other = "B" if running == "A" else "A"
    broken_version = bump(__version__, 2)
    secret = vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0]
    install(vm, bundles.broken)
    reboot_into_other_slot(vm, other)
    vm.wait_for(rf"hearth-health: slot {other} NOT healthy after {BROKEN_TIMEOUT_S} s", 1800)
    vm.wait_exit(600)  # the health program rebooted the box
    vm.boot_again()
    assert vm.slot == running, "the firmware did not fall back to the permanent slot"
    wait_ready(vm)
    vm.wait_ssh(300)
    assert vm.ssh("cat /etc/hearth-release").startswith(f"VERSION={__version__}\n")
    result = json.loads(vm.ssh("cat /var/lib/hearth/update/last-result.json"))
    assert result["result"] == "rolled-back" and result["to"] == broken_version, result
    assert "hearth-indexer" in result["reason"], result
    status = json.loads(vm.ssh("rauc status --output-format=json"))
    assert status["booted"] == running
    assert vm.ssh(f"{BACKEND} get-state {other}").strip() == "bad"
    assert vm.ssh(f"{BACKEND} get-state {running}").strip() == "good"
    slot = next(s[name] for s in status["slots"] for name in s if s[name].get("bootname") == other)
    line = vm.ssh(f"{GUEST_APPLIANCE} update status")
    assert f"Update to {broken_version} was rolled back" in line, line
    assert vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0] == secret
    return [f"rolled back from {broken_version}; rauc status of slot {other}: {json.dumps(slot)[:400]}; "
            f"appliance update status: {line.strip()[:300]}"]


Step = Callable[[VM, Bundles], list[str]]
STEPS: tuple[tuple[str, Step], ...] = (
    (FIRST_BOOT, first_boot), (INSTALL_CUT, install_cut), (ROLLBACK, rollback))


class SecondCard:
    """The steps in a thread: started by a test that mostly waits (card wear), collected
    one by one by the tests in test_second_card.py (which start it themselves when
    nobody did, e.g. run alone with ``-k``)."""

    def __init__(self, workdir: Path, bundles: Bundles) -> None:
        self.workdir = workdir
        self.bundles = bundles
        self.thread: threading.Thread | None = None
        self.found: dict[str, list[str]] = {}
        self.errors: dict[str, BaseException] = {}
        self.done = threading.Event()
        self.step_done = {name: threading.Event() for name, _ in STEPS}
        self.started = 0.0

    def start(self) -> None:
        if self.thread is None:
            self.started = time.monotonic()
            self.thread = threading.Thread(target=self._run, args=(self.bundles,), name="second-card",
                                           daemon=True)
            self.thread.start()

    def _run(self, bundles: Bundles) -> None:
        vm = VM(image=image_path(), workdir=self.workdir, boot_config=BAD_CONFIG)
        try:
            vm.start()
            for name, step in STEPS:
                try:
                    self.found[name] = step(vm, bundles)
                except BaseException as exc:  # noqa: BLE001 - handed to the test that collects it
                    self.errors[name] = exc
                    return  # the later steps need this one's box
                finally:
                    self.step_done[name].set()
        except BaseException as exc:  # noqa: BLE001 - QEMU would not start
            self.errors.setdefault(FIRST_BOOT, exc)
        finally:
            for event in self.step_done.values():
                event.set()
            try:
                vm.stop()
            finally:
                self.done.set()

    def result(self, name: str) -> list[str]:
        self.start()
        left = SECOND_CARD_TIMEOUT_S - (time.monotonic() - self.started)
        if not self.step_done[name].wait(max(0.0, left)):
            pytest.fail(f"the second card's step {name!r} did not end within "
                        f"{SECOND_CARD_TIMEOUT_S:.0f} s of its start")
        if name in self.errors:
            raise self.errors[name]
        if name not in self.found:
            failed = ", ".join(self.errors) or "none"
            pytest.fail(f"not run: an earlier step of the second card failed ({failed})")
        return self.found[name]
