"""A/B updates on the shared box (issue #16's "Done when"), through ``rauc install`` in the
guest and the emulated tryboot rule (vm.py), after the shared box's other tests:

1. bundles with a bad signature, cut short, or for another architecture are refused and
   nothing changes (boot files, RAUC's slot states, the running slot);
2. version X+1 (the image's own system, ``/etc/hearth-release`` bumped), from a stick: the
   OLED's question, a short press, the USB agent installs and reboots into it;
   tried, marked good by the health program, permanent; a tower appointment, a paired
   node's backup stream, the pairing, the keys and bitcoind's chain are all still there
   and bitcoind did not sync again.

The power cut during an install and the rollback of a broken X+2 need no state from this
box: they run on the second card (secondcard.py) meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets

import pytest
from coincurve import PrivateKey

from appliance import __version__
from appliance.client.backup import BoxAddress
from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of
from appliance.transport.noise import Keypair

from .backupagent import Writer, check_store
from .checks import wait_index_matches_bitcoind, wait_ready
from .conftest import Box
from .updates import BACKEND, Bundles, boot_state, bump, install, wait_guest_log
from .vm import GUEST_CLI, MINE, make_stick

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(3600)]


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
