"""A fresh card whose hearth.toml is refused, then fixed, then a power cut during first
boot itself, on its own VM (its own card), beside the shared box of the other tests
(test_first_boot_config.py says why and collects the result).

1. The owner's file has a bad value: first boot refuses it with the reason on the
   console (and the OLED: not visible here, the refused file was to choose the simulated
   panel), changes nothing, leaves the file on the boot partition, starts no service.
2. The owner fixes the file on the card and powers on: first boot takes it (merged over
   the image's settings) and is cut while it makes the box's keys.
3. Powered on again: first boot runs again from the start and completes; the box is ready.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from .checks import BOOT_TIMEOUT, fsck_results, wait_ready
from .conftest import GUEST_CONFIG, image_path
from .vm import GUEST_CLI, VM

BAD_CONFIG = GUEST_CONFIG + '\n[node]\ndbcache_mib = "lots"\n'
#: The whole scenario: three boots, the last one to ready (~6 min alone, more beside
#: the shared box).
SCENARIO_TIMEOUT_S = 2000.0


def refused_config_then_power_cut_during_first_boot(workdir: Path) -> list[str]:
    """The scenario on a fresh card in ``workdir``; what it found, to print."""
    found: list[str] = []
    vm = VM(image=image_path(), workdir=workdir, boot_config=BAD_CONFIG)
    vm.start()
    found.append(f"QEMU started (bad config), console {vm.console}")
    try:
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
        vm.wait_for(r"hearth-firstboot: done\b", BOOT_TIMEOUT,
                    fail=r"hearth-firstboot\.service: Failed.*")
        wait_ready(vm)
        vm.wait_ssh(300)
        conf = vm.ssh("cat /etc/hearth/hearth.toml")
        assert 'network = "regtest"' in conf and "auto_size = true" in conf
        assert vm.ssh("stat -c '%a %U' /var/lib/hearth/hsm_secret").strip() == "600 hearth"
        assert "regtest" in vm.ssh(f"{GUEST_CLI} getblockchaininfo")
        found.append(f"after the cut during first boot: fsck {fsck}; ready "
                     f"{time.time() - vm.started:.0f} s after the first power on")
    finally:
        vm.stop()
    return found


class Scenario:
    """The scenario in a thread: started by whoever wants it to overlap, collected by the
    test (which starts it itself when nobody did)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.thread: threading.Thread | None = None
        self.found: list[str] = []
        self.error: BaseException | None = None
        self.started = 0.0

    def start(self) -> None:
        if self.thread is None:
            self.started = time.monotonic()
            self.thread = threading.Thread(target=self._run, name="first-boot-config", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.found = refused_config_then_power_cut_during_first_boot(self.workdir)
        except BaseException as exc:  # noqa: BLE001 - handed to the test that collects it
            self.error = exc

    def result(self) -> list[str]:
        self.start()
        assert self.thread is not None
        self.thread.join(SCENARIO_TIMEOUT_S - (time.monotonic() - self.started))
        if self.thread.is_alive():
            pytest.fail(f"the refused-config scenario did not end in {SCENARIO_TIMEOUT_S:.0f} s")
        if self.error is not None:
            raise self.error
        return self.found
