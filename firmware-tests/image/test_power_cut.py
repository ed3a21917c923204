"""Power cuts on the booted box (after test_boot's checks, on the same card): QEMU is
killed without warning at chosen moments, then powered on again. Every time: the root
filesystem was checked (clean, or repaired) by the initramfs, every program is RUNNING,
the index equals bitcoind's chain, and what the box acknowledged before the cut is
still there.

The cut is a SIGKILL of QEMU: what the guest had not flushed to its virtual disk is
lost, as on a Pi whose plug is pulled.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
from coincurve import PrivateKey

from appliance import identity
from appliance.client.backup import BoxAddress
from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of
from appliance.transport.noise import Keypair

from .agecli import decrypt, encrypt_light
from .backupagent import GONE, Writer, check_store
from .checks import fsck_results, one_shot_programs, wait_index_matches_bitcoind, wait_ready
from .conftest import KNOWN_SECRET, Box, restore_payload
from .vm import GUEST_CLI, MINE, VM, make_stick, mtools

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(1800)]


def wait_steady(vm: VM, what: str, timeout: float = 300) -> None:
    """Every program RUNNING for a minute without a restart: one crash-looping since the
    cut would show a new pid or a short uptime. Waits only as long as the youngest
    program needs (often not at all: catching up took longer)."""
    first: dict[str, str] = {}
    one_shot = one_shot_programs()
    deadline = time.monotonic() + timeout
    while True:
        table = vm.ssh("supervisorctl status", check=False)
        rows = {m[1]: m for m in re.finditer(r"^(\S+)\s+(\S+)\s+pid (\d+), uptime (\d+):(\d\d):\d\d",
                                             table, re.M)}
        down = [ln for ln in table.splitlines()
                if " RUNNING " not in ln and ln.split(maxsplit=1)[0] not in one_shot]
        assert not down, f"not RUNNING after the cut {what}:\n" + "\n".join(down)
        for name, m in rows.items():
            assert first.setdefault(name, m[3]) == m[3], \
                f"{name} restarted after the cut {what} (pid {first[name]} -> {m[3]})"
        young = [n for n, m in rows.items() if int(m[4]) == 0 and int(m[5]) == 0]
        if not young:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{young} never ran a minute after the cut {what}:\n{table}")
        time.sleep(5)


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
    wait_steady(vm, what)
    print(f"power cut {what}: back, all RUNNING and index = bitcoind at {height} "
          f"{time.time() - t0:.0f} s later; fsck: {fsck}")
    return fsck


def test_power_cut_while_blocks_are_indexed_and_unflushed(box: Box) -> None:
    """What a cut does to the chain side, both at once: bitcoind has 150 new blocks on disk
    (flushed) that the indexer is still working through (it was stopped while they were
    mined, so it is behind when it starts), and more blocks are being mined that bitcoind
    has not flushed, so the cut also winds its tip back below what the indexer and the
    tower had seen (on mainnet it downloads them again; regtest has no peers). After it
    the flushed blocks are there and the index follows bitcoind wherever it ended up."""
    vm = box.vm
    vm.wait_ssh(300)
    box.pull_restore_stick()  # the tests may run alone (-k): restore first
    wait_ready(vm)
    vm.ssh("supervisorctl stop hearth-indexer")
    vm.ssh(MINE.format(n=150), timeout=600)
    vm.ssh(f"{GUEST_CLI} gettxoutsetinfo none")  # bitcoind flushes its chainstate
    flushed = int(vm.ssh(f"{GUEST_CLI} getblockcount"))
    vm.ssh("supervisorctl start hearth-indexer")
    vm.ssh(f"nohup sh -c \"{MINE.format(n=60)}\" >/dev/null 2>&1 &")
    deadline = time.monotonic() + 300
    while (seen := int(vm.ssh(f"{GUEST_CLI} getblockcount"))) < flushed + 15:
        if time.monotonic() > deadline:
            pytest.fail("the guest did not mine 15 blocks in 300 s")
        time.sleep(1)
    print(f"cut with bitcoind at {seen} ({flushed} flushed), the indexer catching up: "
          + vm.ssh("tail -n 2 /var/log/supervisor/hearth-indexer.log", check=False).strip())
    cut_and_boot_again(vm, "while blocks were indexed and others not flushed")
    after = int(vm.ssh(f"{GUEST_CLI} getblockcount"))
    assert after >= flushed, f"bitcoind lost flushed blocks: {after} < {flushed}"
    print(f"bitcoind at {after} after the cut ({seen} before it, {flushed} flushed)")


#: In the guest: wait (up to 5 min) for the USB agent's temp file on the mounted stick
#: to hold data, print its size. The host pulls the plug the moment this returns.
_WAIT_FOR_TEMP = (
    "for i in $(seq 3000); do "
    "for f in /run/hearth-usb/stick-*/HEARTH/.hearth-*.age.tmp; do "
    "[ -f \"$f\" ] && s=$(stat -c %s \"$f\") && [ \"$s\" -gt 0 ] && echo \"$s\" && exit 0; "
    "done; sleep 0.1; done; exit 1")


def test_power_cut_while_appointments_backup_records_and_a_usb_backup_are_written(
        box: Box, paired: tuple[BoxAddress, Keypair], tmp_path: Path) -> None:
    """One cut while everything that acknowledges writes is writing, as on a box whose
    Lightning node is busy when the plug is pulled: a TEOS client stores appointments, a
    paired node streams backup records and file versions, and the USB agent is writing a
    new backup to a stick that holds an older one (its temp file on the stick holds data).
    After it: every appointment the tower signed a receipt for and every backup record the
    agent acknowledged is there, byte for byte, the store answers, the newest file version
    it serves is a complete one, and the newest backup on the stick is a complete one (the
    older one, unchanged, or the new one, which decrypts)."""
    vm = box.vm
    if box.phrase is None:
        pytest.fail(f"{box.phrase_error}")
    # Enough channel-state data on the box that the USB backup takes a while to write.
    filler = Writer(*paired, "usb-filler", file_size=2 << 20, budget=8 << 20)
    filler.start()
    filler.join(timeout=900)
    assert filler.ended is None, f"could not fill the backup agent: {filler.ended!r}"
    old = tmp_path / "old.age"
    encrypt_light(restore_payload(KNOWN_SECRET), old, box.phrase)
    old_name = f"hearth-{identity.box_id(KNOWN_SECRET)}-20260101T000000Z.age"
    stick = tmp_path / "stick.img"
    make_stick(stick, {f"HEARTH/{old_name}": old.read_bytes()}, size_mib=256, label="CUT")

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
    writer = Writer(*paired, "cut-during-writes", file_size=1 << 20, budget=96 << 20)
    sender.start()
    writer.start()
    deadline = time.monotonic() + 600
    while (len(acknowledged) < 20 or writer.sent.count(writer.cln) < 16
           or writer.sent.count(writer.file) < 2):
        if time.monotonic() > deadline or not sender.is_alive() or not writer.is_alive():
            pytest.fail(f"only {len(acknowledged)} appointments, "
                        f"{writer.sent.count(writer.cln)} backup records and "
                        f"{writer.sent.count(writer.file)} file versions acknowledged "
                        f"(backup writer: {writer.ended!r})")
        time.sleep(0.2)

    # Both streams go on while the stick is plugged in; the cut comes once the agent's
    # temp file on the stick holds data.
    watch = subprocess.Popen(
        ["ssh", "-q", "-i", str(vm.ssh_key), "-p", str(vm.ssh_port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "root@127.0.0.1", _WAIT_FOR_TEMP],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    time.sleep(5)  # the watcher is running in the guest
    vm.hotplug_stick(stick)
    try:
        out, _ = watch.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        watch.kill()
        pytest.fail("the agent never started writing a backup to the stick")
    if watch.returncode != 0:
        pytest.fail("no temp file with data appeared on the stick within 5 min")
    cut_and_boot_again(vm, f"after {len(acknowledged)} acknowledged appointments, "
                           f"{writer.sent.count(writer.cln)} backup records and with "
                           f"{int(out)} bytes in the USB backup's temp file")
    stop.set()
    writer.stop.set()
    sender.join(timeout=60)
    writer.join(timeout=60)
    assert writer.ended is None or isinstance(writer.ended, GONE), \
        f"the backup agent refused a write: {writer.ended!r}"
    missing = [t.hex() for t in acknowledged if client.get_appointment(locator_of(t))[0] != 200]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged appointments lost"
    print(f"{len(acknowledged)} acknowledged appointments all present after the cut; "
          + asyncio.run(check_store(writer)))

    listing = [Path(p).name for p in
               mtools("mdir", "-b", "-i", str(stick), "::/HEARTH").stdout.split()]
    print(f"stick after the cut: {listing}")
    backups = sorted(n for n in listing if n.endswith(".age"))
    assert backups, "the older backup is gone from the stick"
    newest = tmp_path / backups[-1]
    mtools("mcopy", "-o", "-i", str(stick), f"::/HEARTH/{backups[-1]}", str(newest))
    if backups[-1] == old_name:
        assert newest.read_bytes() == old.read_bytes(), "the older backup was changed"
        print("the newest backup on the stick is the older one, unchanged")
    else:
        decrypt(newest, tmp_path / "payload.tar", box.phrase)  # raises if half-written
        print(f"the newest backup on the stick, {backups[-1]}, is complete and decrypts")
