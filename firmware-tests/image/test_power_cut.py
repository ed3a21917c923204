"""Power cuts on the booted box (after test_boot's checks, on the same card): QEMU is
killed without warning at chosen moments, then powered on again. Every time: the root
filesystem was checked (clean, or repaired) by the initramfs, every program is RUNNING,
the index equals bitcoind's chain, and what the box acknowledged before the cut is
still there.

The cut is a SIGKILL of QEMU: what the guest had not flushed to its virtual disk is
lost, as on a Pi whose plug is pulled.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
from coincurve import PrivateKey

from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of

from .agecli import decrypt
from .checks import fsck_results, wait_index_matches_bitcoind, wait_ready
from .conftest import Box
from .vm import GUEST_CLI, MINE, VM, make_stick, mtools

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(1800)]


def cut_and_boot_again(vm: VM, what: str) -> dict[str, str]:
    """Pull the plug, power on, and check the box came back whole; the fsck results."""
    t0 = time.time()
    vm.power_cut()
    vm.boot_again()
    fsck = fsck_results(vm)
    assert "NOT CLEAN" not in fsck["root filesystem"], fsck
    assert "NOT CLEAN" not in fsck["boot partition"], fsck
    # The initramfs printed its own check of root on the console before mounting it.
    assert re.search(r"(?i)(will now check|checking) root file system", vm.console_text()), \
        "no fsck in the initramfs"
    wait_ready(vm)
    vm.wait_ssh(300)
    height = wait_index_matches_bitcoind(vm)
    # ... and they stay up: a program crash-looping since the cut would show a short uptime.
    time.sleep(60)
    table = vm.ssh("supervisorctl status", check=False)
    unstable = [ln for ln in table.splitlines() if not ln.startswith("bitcoind-repair ")
                and (" RUNNING " not in ln or re.search(r"uptime 0:00:[0-5]\d", ln))]
    assert not unstable, f"not steadily RUNNING after the cut {what}:\n" + "\n".join(unstable)
    print(f"power cut {what}: back, all RUNNING and index = bitcoind at {height} "
          f"{time.time() - t0:.0f} s later; fsck: {fsck}")
    return fsck


def test_power_cut_while_blocks_are_indexed(box: Box) -> None:
    """bitcoind has 150 new blocks on disk (flushed); the cut comes while the indexer works
    through them (it was stopped while they were mined, so it is behind when it starts)."""
    vm = box.vm
    vm.wait_ssh(300)
    wait_ready(vm)
    vm.ssh("supervisorctl stop hearth-indexer")
    vm.ssh(MINE.format(n=150), timeout=600)
    vm.ssh(f"{GUEST_CLI} gettxoutsetinfo none")  # bitcoind flushes its chainstate
    tip = int(vm.ssh(f"{GUEST_CLI} getblockcount"))
    vm.ssh("supervisorctl start hearth-indexer")
    time.sleep(3)  # into its catch-up
    print(f"cut with bitcoind at {tip}, the indexer catching up: "
          + vm.ssh("tail -n 2 /var/log/supervisor/hearth-indexer.log", check=False).strip())
    cut_and_boot_again(vm, "while blocks were indexed")
    assert int(vm.ssh(f"{GUEST_CLI} getblockcount")) == tip


def test_power_cut_while_tower_appointments_are_stored(box: Box) -> None:
    """Every appointment the tower signed a receipt for before the cut is there after it."""
    vm = box.vm
    password = vm.ssh("cat /var/lib/hearth/tower/http-password").strip()
    client = TeosClient(f"http://127.0.0.1:{vm.tower_port}", PrivateKey(),
                        basic_auth=("hearth", password), timeout=30)
    client.register()
    acknowledged: list[bytes] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            txid = secrets.token_bytes(32)
            try:
                client.add_appointment(txid, secrets.token_bytes(200))
            except Exception:  # noqa: BLE001 - the plug was pulled mid-request
                return
            acknowledged.append(txid)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + 300
    while len(acknowledged) < 20:
        if time.monotonic() > deadline or not sender.is_alive():
            pytest.fail(f"only {len(acknowledged)} appointments acknowledged")
        time.sleep(0.2)
    cut_and_boot_again(vm, f"after {len(acknowledged)} acknowledged appointments")
    stop.set()
    sender.join(timeout=60)
    missing = [t.hex() for t in acknowledged if client.get_appointment(locator_of(t))[0] != 200]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged appointments lost"
    print(f"{len(acknowledged)} acknowledged appointments all present after the cut")


def test_power_cut_during_a_usb_backup(box: Box, tmp_path: Path) -> None:
    """Cut while the agent writes a backup to a stick: the newest backup on the stick is
    never a half-written one (a complete one, or none)."""
    vm = box.vm
    if box.phrase is None:
        pytest.fail(f"{box.phrase_error}")
    stick = tmp_path / "stick.img"
    make_stick(stick, {}, label="CUT")
    vm.hotplug_stick(stick)
    deadline = time.monotonic() + 300
    while "nosuid" not in vm.ssh("grep -i ' vfat ' /proc/mounts || true"):
        if time.monotonic() > deadline:
            pytest.fail("the agent never mounted the stick")
        time.sleep(0.5)
    time.sleep(1)  # into the write
    cut_and_boot_again(vm, "during a USB backup")
    try:
        listing = mtools("mdir", "-b", "-i", str(stick), "::/HEARTH").stdout.split()
    except subprocess.CalledProcessError:
        listing = []
    backups = sorted(p for p in listing if p.endswith(".age"))
    print(f"stick after the cut: {listing}")
    if backups:
        newest = backups[-1] if backups[-1].startswith("::") else f"::{backups[-1]}"
        local = tmp_path / Path(newest).name
        mtools("mcopy", "-o", "-i", str(stick), newest, str(local))
        decrypt(local, tmp_path / "payload.tar", box.phrase)  # raises if half-written


def test_power_cut_that_winds_bitcoind_back(box: Box) -> None:
    """Blocks mined and not yet flushed by bitcoind are lost in the cut (on mainnet it
    downloads them again; regtest has no peers): after it bitcoind's tip is lower than
    what the indexer and the tower had seen. They must follow it back down."""
    vm = box.vm
    start = int(vm.ssh(f"{GUEST_CLI} getblockcount"))
    vm.ssh(f"nohup sh -c \"{MINE.format(n=60)}\" >/dev/null 2>&1 &")
    deadline = time.monotonic() + 300
    while int(vm.ssh(f"{GUEST_CLI} getblockcount")) < start + 15:
        if time.monotonic() > deadline:
            pytest.fail("the guest did not mine 15 blocks in 300 s")
        time.sleep(1)
    seen = int(vm.ssh(f"{GUEST_CLI} getblockcount"))
    cut_and_boot_again(vm, "with blocks bitcoind had not flushed")
    print(f"bitcoind at {int(vm.ssh(f'{GUEST_CLI} getblockcount'))} after the cut "
          f"({seen} before it)")
