"""What the update tests share: the bundles they install (made once per run, on the host,
from the image under test) and the steps of an install seen from the host."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from appliance import __version__

from .bundles import edit_rootfs, make_bundle, other_signer, read_rootfs, slot_rootfs, tiny_rootfs
from .conftest import image_path
from .vm import VM

BACKEND = "/usr/lib/hearth/rauc-backend"
#: The broken bundle's health policy: give up after 90 s instead of 15 min (its own file):
#: its indexer never starts, so waiting longer proves nothing more and costs the run minutes.
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


def build_bundles(work: Path) -> Bundles:
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
