"""A fresh card whose hearth.toml is refused, then fixed, then a power cut during first
boot itself (its own VM, before the shared box of test_boot starts).

1. The owner's file has a bad value: first boot refuses it with the reason on the
   console (and the OLED: not visible here, the refused file was to choose the simulated
   panel), changes nothing, leaves the file on the boot partition, starts no service.
2. The owner fixes the file on the card and powers on: first boot takes it (merged over
   the image's settings) and is cut while it makes the box's keys.
3. Powered on again: first boot runs again from the start and completes; the box is ready.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .checks import BOOT_TIMEOUT, fsck_results, wait_ready
from .conftest import GUEST_CONFIG, image_path
from .vm import GUEST_CLI, VM

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(2400)]

BAD_CONFIG = GUEST_CONFIG + '\n[node]\ndbcache_mib = "lots"\n'


@pytest.fixture
def fresh_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    vm = VM(image=image_path(), workdir=tmp_path_factory.mktemp("firmware-bad-config"),
            boot_config=BAD_CONFIG)
    vm.start()
    print(f"\nfirmware: QEMU started (bad config), console {vm.console}")
    try:
        yield vm
    finally:
        vm.stop()


def test_refused_config_then_power_cut_during_first_boot(fresh_vm: VM) -> None:
    vm = fresh_vm
    m = vm.wait_for(r"hearth-firstboot: hearth.toml on the boot partition REFUSED: (.*?)\s*$",
                    BOOT_TIMEOUT, fail=r"hearth-firstboot: done")
    assert m.group(1) == "node.dbcache_mib: expected int, got 'lots'", m.group(0)
    vm.wait_for(r"hearth-firstboot: nothing was changed; fix the file", 60)
    time.sleep(20)  # supervisord must not start on settings the owner did not ask for
    assert "hearth: ready" not in vm.console_text() and "box key" not in vm.console_text()
    print(f"refused {time.time() - vm.started:.0f} s after power on: {m.group(1)}")
    vm.power_cut()
    assert vm.read_boot_file("hearth.toml") == BAD_CONFIG.encode(), "the refused file was not left"

    vm.edit_card({"hearth.toml": GUEST_CONFIG.encode()})
    vm.boot_again()
    vm.wait_for(r"hearth-firstboot: using hearth.toml from the boot partition", BOOT_TIMEOUT)
    vm.wait_for(r"hearth-firstboot: box key [0-9a-f]{66}", BOOT_TIMEOUT)
    vm.power_cut()  # first boot has made the keys, not yet bitcoin.conf
    print("power cut during first boot, after the box's keys")

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
    print(f"after the cut during first boot: fsck {fsck}; ready")
