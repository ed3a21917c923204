"""Card wear at steady state: bytes written per day, per program, on the booted image.

Runs on the shared box after test_boot's checks, before the power cuts: the initial sync
is over (test_boot mined a block), every program RUNNING. Two phases of simulated
household activity, measured in the guest:

* quiet (QUIET_S): a wallet polling over Electrum, a tower appointment every 30 s;
* blocks (BLOCKS_S): the same plus a block every BLOCK_EVERY_S (faster than mainnet's
  10 minutes, so the window holds several).

A day is then quiet_rate x 86400 s + per_block x 144 blocks. Counters: each program's
``write_bytes`` (/proc/PID/io: what it sent towards the disk) plus the growth of its
supervisord log (written by supervisord for it), and the card's own sectors written
(/sys/block/vda/stat) for the total, which adds the filesystem's journal and metadata.
bitcoind is reported apart: on regtest its blocks are tiny, on mainnet a day of blocks
is ~200 MB whatever Hearth does.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
from coincurve import PrivateKey

from appliance.tower.client import TeosClient

from .checks import end_initial_sync, wait_ready
from .conftest import Box
from .secondcard import SecondCard
from .vm import MINE, VM, electrum_request

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(1800)]

QUIET_S = 240
BLOCKS_S = 240
BLOCK_EVERY_S = 30
BUDGET_MB_PER_DAY = 50.0  # issue 15: Hearth's own services, bitcoind apart

_SAMPLE = r'''
import glob, json, os, re, subprocess
os.sync()  # what is dirty now reaches the card's counters
out = {"disk": {}, "programs": {}}
for stat in glob.glob("/sys/block/*/stat"):
    dev = stat.split("/")[3]
    if not dev.startswith(("loop", "ram", "zram")):
        out["disk"][dev] = int(open(stat).read().split()[6]) * 512
status = subprocess.run(["supervisorctl", "status"], capture_output=True, text=True).stdout
for line in status.splitlines():
    name = line.split()[0]
    m = re.search(r"pid (\d+),", line)
    if not m:
        out["programs"][name] = None
        continue
    pid = int(m.group(1))
    io = dict(ln.split(": ") for ln in open(f"/proc/{pid}/io").read().splitlines())
    logs = sum(os.path.getsize(p) for p in glob.glob(f"/var/log/supervisor/{name}*.log*"))
    out["programs"][name] = {"pid": pid, "write": int(io["write_bytes"]), "log": logs}
sup = int(open("/var/run/supervisord.pid").read().strip())
io = dict(ln.split(": ") for ln in open(f"/proc/{sup}/io").read().splitlines())
out["supervisord"] = int(io["write_bytes"])
print(json.dumps(out))
'''


def sample(vm: VM) -> dict[str, Any]:
    code = base64.b64encode(_SAMPLE.encode()).decode()
    result: dict[str, Any] = json.loads(vm.ssh(f"echo {code} | base64 -d | python3"))
    return result


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Bytes written between two samples: each program (own + its log), the disk."""
    out: dict[str, float] = {}
    for name, before in a["programs"].items():
        after = b["programs"].get(name)
        if before is None and after is None:
            continue  # a one-shot program that did not run (bitcoind-repair)
        assert before and after and before["pid"] == after["pid"], \
            f"{name} restarted during the measurement: {before} -> {after}"
        # A rotated log shrinks: count what it grew by, at least nothing.
        out[name] = after["write"] - before["write"] + max(0, after["log"] - before["log"])
    logs = sum(max(0, b["programs"][n]["log"] - before["log"])
               for n, before in a["programs"].items() if before is not None)
    out["supervisord (own)"] = max(0, b["supervisord"] - a["supervisord"] - logs)
    out["card total"] = sum(b["disk"][d] - a["disk"][d] for d in a["disk"])
    return out


def test_card_wear_per_day(box: Box, second_card: SecondCard) -> None:
    vm = box.vm
    # The second card's boots start meanwhile (they need the CPU; this test mostly waits
    # and counts only this card's bytes): test_second_card collects them.
    second_card.start()
    vm.wait_ssh(300)
    box.pull_restore_stick()  # the tests may run alone (-k): restore first
    wait_ready(vm)
    end_initial_sync(vm)  # steady state: the IBD -> steady cache restart is behind us
    password = vm.ssh("cat /var/lib/hearth/tower/http-password").strip()
    tower = TeosClient(f"http://127.0.0.1:{vm.tower_port}", PrivateKey(),
                       basic_auth=("hearth", password))
    tower.register()
    time.sleep(60)  # let what the previous tests started settle (catch-up, compactions)

    def activity(seconds: float, block_every: float | None) -> int:
        blocks, end = 0, time.monotonic() + seconds
        next_block = time.monotonic() + (block_every or seconds * 2)
        next_appt = time.monotonic()
        while time.monotonic() < end:
            electrum_request(vm.electrum_port, "blockchain.headers.subscribe", [])
            if time.monotonic() >= next_appt:
                tower.add_appointment(secrets.token_bytes(32), secrets.token_bytes(200))
                next_appt += 30
            if block_every and time.monotonic() >= next_block:
                vm.ssh(MINE.format(n=1))
                blocks += 1
                next_block += block_every
            time.sleep(5)
        return blocks

    s0 = sample(vm)
    t0 = time.monotonic()
    activity(QUIET_S, None)
    s1 = sample(vm)
    t1 = time.monotonic()
    blocks = activity(BLOCKS_S, BLOCK_EVERY_S)
    s2 = sample(vm)
    t2 = time.monotonic()
    quiet, busy = delta(s0, s1), delta(s1, s2)
    per_day: dict[str, float] = {}
    for name in quiet:
        rate = quiet[name] / (t1 - t0)
        per_block = max(0.0, (busy[name] - rate * (t2 - t1)) / max(blocks, 1))
        per_day[name] = rate * 86400 + per_block * 144
    hearth = sum(v for k, v in per_day.items() if k.startswith("hearth-"))
    lines = [f"card wear, MB/day (quiet {t1 - t0:.0f} s, then {blocks} blocks in {t2 - t1:.0f} s):"]
    for name, value in sorted(per_day.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:24s} {value / 1e6:9.2f}")
    lines.append(f"  {'Hearth services (sum)':24s} {hearth / 1e6:9.2f}  (budget {BUDGET_MB_PER_DAY})")
    print("\n" + "\n".join(lines))
    (vm.workdir / "wear.json").write_text(json.dumps(
        {"per_day_bytes": per_day, "hearth_bytes": hearth, "blocks": blocks,
         "quiet_s": t1 - t0, "busy_s": t2 - t1, "raw": [s0, s1, s2]}, indent=1))
    assert hearth / 1e6 < BUDGET_MB_PER_DAY, "\n".join(lines)
