"""A/B updates on the booted box (issue #16's "Done when"), through ``rauc install`` in the
guest and the emulated tryboot rule (vm.py), on the session's card, in this order:

1. bundles with a bad signature, cut short, or for another architecture are refused and
   nothing changes (boot files, RAUC's slot states, the running slot);
2. a power cut in the middle of an install: the box boots the old slot, whole;
3. version X+1 (the image's own system, ``/etc/hearth-release`` bumped), from a stick: the
   OLED's question, a short press, the USB agent installs and reboots into it;
   tried, marked good by the health program, permanent; a tower appointment, a paired
   node's backup stream, the pairing, the keys and bitcoind's chain are all still there
   and bitcoind did not sync again;
4. version X+2 whose indexer cannot start: tried, not healthy within its set time, marked
   bad, and the box reboots by itself into X+1 with its state.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from coincurve import PrivateKey

from appliance import __version__
from appliance.client.backup import BoxAddress
from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of
from appliance.transport.noise import Keypair

from .backupagent import Writer, check_store
from .bundles import edit_rootfs, make_bundle, other_signer, read_rootfs, slot_rootfs, tiny_rootfs
from .checks import wait_index_matches_bitcoind, wait_ready
from .conftest import Box, image_path
from .vm import GUEST_APPLIANCE, GUEST_CLI, MINE, VM, make_stick

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(3600)]

BACKEND = "/usr/lib/hearth/rauc-backend"
#: The broken bundle's health policy: give up after 90 s instead of 15 min (its own file): its
#: indexer never starts, so waiting longer proves nothing more and costs the run minutes.
BROKEN_TIMEOUT_S = 90


def bump(version: str, by: int) -> str:
    major, minor, patch = (int(x) for x in version.split("."))
    return f"{major}.{minor}.{patch + by}"


@dataclass
class Bundles:
    next: Path  # X+1: healthy
    broken: Path  # X+2: its indexer cannot start
    bad_signature: Path
    truncated: Path
    other_arch: Path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("bundles")
    t0 = time.time()
    base = slot_rootfs(image_path(), work / "slot-a.ext4")
    release = read_rootfs(base, "/etc/hearth-release").decode()
    assert release.startswith(f"VERSION={__version__}\n"), release

    def variant(version: str, extra: dict[str, bytes]) -> Path:
        ext = work / f"rootfs-{version}.ext4"
        shutil.copyfile(base, ext)
        bumped = release.replace(f"VERSION={__version__}", f"VERSION={version}").encode()
        edit_rootfs(ext, {"/etc/hearth-release": bumped, **extra}, work)
        out = make_bundle(ext, version, work / f"hearth-{version}-arm64.raucb")
        ext.unlink()
        return out

    good = variant(bump(__version__, 1), {})
    conf = read_rootfs(base, "/etc/supervisor/conf.d/hearth.conf").decode()
    broken_conf, n = re.subn(r"(\[program:hearth-indexer\]\ncommand=).*", r"\1/bin/false", conf)
    assert n == 1
    broken = variant(bump(__version__, 2), {
        "/etc/supervisor/conf.d/hearth.conf": broken_conf.encode(),
        "/usr/lib/hearth/health.toml": f"timeout_s = {BROKEN_TIMEOUT_S}\npoll_s = 10\n".encode()})
    tiny = tiny_rootfs(work / "tiny.ext4")
    bad_sig = make_bundle(tiny, bump(__version__, 1), work / "bad-signature.raucb", key=other_signer(work))
    other = make_bundle(tiny, bump(__version__, 1), work / "armhf.raucb", compatible="hearth-armhf")
    truncated = work / "truncated.raucb"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    print(f"bundles made in {time.time() - t0:.0f} s: {good.stat().st_size >> 20} MiB each")
    return Bundles(good, broken, bad_sig, truncated, other)


def boot_state(vm: VM) -> str:
    """What decides the next boots: the boot partition's slot files and RAUC's view."""
    files = vm.ssh("cd /boot/firmware && for f in hearth-slot.txt hearth-slot-state.txt tryboot.txt; "
                   "do echo \"== $f\"; cat $f 2>/dev/null; done; true")
    status = json.loads(vm.ssh("rauc status --output-format=json"))
    return files + json.dumps({"booted": status["booted"], "primary": status.get("boot_primary")})


def install(vm: VM, bundle: Path, check: bool = True) -> str:
    vm.push(bundle, "/data/update.raucb")
    try:
        return vm.ssh("rauc install /data/update.raucb 2>&1", timeout=1800, check=check)
    finally:
        if vm.proc is not None:
            vm.ssh("rm -f /data/update.raucb", check=False)


def wait_guest_log(vm: VM, program: str, pattern: str, timeout: float) -> str:
    """The first group of ``pattern`` in a supervisord program's log on the guest."""
    deadline = time.monotonic() + timeout
    while not (m := re.search(pattern, vm.ssh(f"cat /var/log/supervisor/{program}.log",
                                               check=False))):
        if time.monotonic() > deadline:
            raise AssertionError(f"no /{pattern}/ in {program}'s log after {timeout:.0f} s: "
                                 + vm.ssh(f"tail -5 /var/log/supervisor/{program}.log", check=False))
        time.sleep(3)
    return m.group(1)


def reboot_into_other_slot(vm: VM, expect: str, timeout: float = 600) -> None:
    """The install flow's last step (``slots.reboot_into_other_slot``), then the power-on the
    emulated firmware turns into a try boot of ``expect``."""
    vm.ssh(f"{BACKEND} reboot-into-other-slot", check=False)
    vm.wait_exit(timeout)
    vm.boot_again()
    assert vm.slot == expect, f"the firmware chose slot {vm.slot}, not {expect}"


def test_refused_bundles_change_nothing(box: Box, bundles: Bundles) -> None:
    vm = box.vm
    vm.wait_ssh(300)
    box.pull_restore_stick()
    wait_ready(vm)
    before = boot_state(vm)
    for bundle, why in ((bundles.bad_signature, r"(?i)signature|certificate|verif"),
                        (bundles.truncated, r"(?i)signature|size|invalid|truncat|verif|failed"),
                        (bundles.other_arch, r"(?i)compatible")):
        out = install(vm, bundle, check=False)
        assert re.search(r"(?i)fail|error|refus|invalid", out) and re.search(why, out), \
            f"{bundle.name}: {out[-600:]}"
        assert boot_state(vm) == before, f"{bundle.name} changed the boot state"
        reason = next((ln for ln in out.splitlines() if re.search(why, ln)), out.strip()[-200:])
        print(f"{bundle.name} refused: {reason.strip()}")


def test_power_cut_during_install_boots_the_old_slot(box: Box, bundles: Bundles) -> None:
    vm = box.vm
    vm.wait_ssh(300)
    box.pull_restore_stick()
    wait_ready(vm)
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
    assert vm.ssh(f"{BACKEND} get-primary").strip() == "A"
    vm.ssh("rm -f /data/update.raucb /data/install.log")
    print("power cut during the install: back on slot A; " + log.strip().splitlines()[-1])


def test_update_keeps_state_and_the_chain(box: Box, bundles: Bundles,
                                          paired: tuple[BoxAddress, Keypair]) -> None:
    vm = box.vm
    next_version = bump(__version__, 1)
    # State: tower appointments, a backup stream from a paired node, blocks, the keys.
    password = vm.ssh("cat /var/lib/hearth/tower/http-password").strip()
    tower = TeosClient(f"http://127.0.0.1:{vm.tower_port}", PrivateKey(), basic_auth=("hearth", password),
                       timeout=60)
    tower.register()
    txids = [secrets.token_bytes(32) for _ in range(5)]
    for txid in txids:
        tower.add_appointment(txid, secrets.token_bytes(200))
    writer = Writer(*paired, "update", file_size=64 << 10, budget=1 << 20)
    writer.run()  # to its budget, here
    assert writer.ended is None, writer.ended
    vm.ssh(MINE.format(n=5), timeout=600)
    height = wait_index_matches_bitcoind(vm)
    tip = vm.ssh(f"{GUEST_CLI} getbestblockhash").strip()
    secret = vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0]

    # The owner's path: a stick carrying the bundle, the OLED's question, a short press;
    # the USB agent verifies, installs and reboots into the tried slot by itself.
    stick = bundles.next.parent / "update-stick.img"
    make_stick(stick, {f"HEARTH/update/{bundles.next.name}": bundles.next.read_bytes()},
               size_mib=(bundles.next.stat().st_size >> 20) + 64, label="UPDATE")
    vm.hotplug_stick(stick)
    asked = wait_guest_log(vm, "hearth-usb", r"asking: (.*)", 900)
    assert asked == f"Update {__version__} -> {next_version}?", asked  # verified, then asked
    vm.ssh("echo press > /run/hearth/button.fifo")  # within the question's 60 s
    wait_guest_log(vm, "hearth-usb", rf"update ({re.escape(next_version)}) installed: rebooting", 1800)
    assert vm.ssh(f"{BACKEND} get-primary", check=False).strip() in ("B", "")  # "" once going down
    vm.wait_exit(600)
    vm.boot_again()
    assert vm.slot == "B", f"the firmware chose slot {vm.slot}, not B"
    vm.wait_for(rf"hearth-health: slot B \(Hearth {re.escape(next_version)}\) healthy", 1800,
                fail=r"hearth-health: slot B NOT healthy.*")
    vm.wait_ssh(300)
    assert vm.ssh("cat /etc/hearth-release").startswith(f"VERSION={next_version}\n")
    assert vm.ssh(f"{BACKEND} get-primary").strip() == "B"
    assert not vm.ssh("ls /boot/firmware/tryboot.txt", check=False).strip()
    result = json.loads(vm.ssh("cat /var/lib/hearth/update/last-result.json"))
    assert result == {"from": __version__, "to": next_version, "result": "good", "reason": None}
    # Same chain, no new sync: bitcoind is at the same tip the moment it answers.
    assert int(vm.ssh(f"{GUEST_CLI} getblockcount")) == height
    assert vm.ssh(f"{GUEST_CLI} getbestblockhash").strip() == tip
    assert wait_index_matches_bitcoind(vm) == height
    assert vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0] == secret
    missing = [t.hex() for t in txids if tower.get_appointment(locator_of(t))[0] != 200]
    assert not missing, f"appointments lost in the update: {missing}"
    # The paired node still gets in (its key is whitelisted on data) and finds its stream.
    print(f"after the update to {next_version}: " + asyncio.run(check_store(writer)))


def test_failed_update_rolls_back(box: Box, bundles: Bundles) -> None:
    vm = box.vm
    vm.wait_ssh(300)
    assert vm.slot == "B", "runs after the update to X+1"
    broken_version = bump(__version__, 2)
    secret = vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0]
    install(vm, bundles.broken)
    reboot_into_other_slot(vm, "A")
    vm.wait_for(rf"hearth-health: slot A NOT healthy after {BROKEN_TIMEOUT_S} s", 1800)
    vm.wait_exit(600)  # the health program rebooted the box
    vm.boot_again()
    assert vm.slot == "B", "the firmware did not fall back to the permanent slot"
    wait_ready(vm)
    vm.wait_ssh(300)
    assert vm.ssh("cat /etc/hearth-release").startswith(f"VERSION={bump(__version__, 1)}\n")
    result = json.loads(vm.ssh("cat /var/lib/hearth/update/last-result.json"))
    assert result["result"] == "rolled-back" and result["to"] == broken_version, result
    assert "hearth-indexer" in result["reason"], result
    status = json.loads(vm.ssh("rauc status --output-format=json"))
    assert status["booted"] == "B"
    assert vm.ssh(f"{BACKEND} get-state A").strip() == "bad"
    slot_a = next(s["rootfs.0"] for s in status["slots"] if "rootfs.0" in s)
    line = vm.ssh(f"{GUEST_APPLIANCE} update status")
    assert f"Update to {broken_version} was rolled back" in line, line
    print(f"rolled back from {broken_version}; rauc status of slot A: {json.dumps(slot_a)[:400]}; "
          f"appliance update status: {line.strip()[:300]}")
    assert vm.ssh("sha256sum /var/lib/hearth/hsm_secret").split()[0] == secret
