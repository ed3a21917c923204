"""What every boot of the image must show, shared by the boot, power-cut and wear tests."""

from __future__ import annotations

import configparser
import json
import re
import time

from .conftest import REPO
from .vm import GUEST_CLI, MINE, VM, VMError, electrum_request

BOOT_TIMEOUT = 900.0


def _autostart() -> dict[str, bool]:
    """The image's supervisord programs and listeners -> whether supervisord starts them."""
    conf = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    conf.read(REPO / "rootfs-overlay/etc/supervisor/conf.d/hearth.conf")
    return {s.split(":", 1)[1]: conf[s].get("autostart", "true") != "false"
            for s in conf.sections() if s.startswith(("program:", "eventlistener:"))}


def expected_programs() -> set[str]:
    """The services that must be RUNNING."""
    return {name for name, auto in _autostart().items() if auto}


def one_shot_programs() -> set[str]:
    """autostart=false: programs run only when needed (bitcoind-repair), not services;
    hearth-ready skips them."""
    return {name for name, auto in _autostart().items() if not auto}


def wait_ready(vm: VM, timeout: float = BOOT_TIMEOUT + 600) -> dict[str, str]:
    """hearth-ready's table from this boot's console: program -> state."""
    m = vm.wait_for(r"hearth: (ready|NOT ready) after \d+ s", timeout)
    time.sleep(3)  # the table follows the marker line
    # Console lines carry the kernel's time stamp and the unit's name before the message.
    table = dict(re.findall(r"hearth:   (\S+)\s+([A-Z]+)", vm.console_text()[m.start():]))
    if m.group(1) != "ready" or set(table) != expected_programs() or set(table.values()) != {"RUNNING"}:
        raise VMError(f"supervisord programs not all RUNNING ({m.group(0)}): {table}")
    return table


def wait_listening(vm: VM, ports: tuple[int, ...], timeout: float = 300) -> None:
    """Every guest TCP port in ``ports`` listens (read inside the guest: from the host a
    forwarded port always accepts, then resets)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = vm.ssh("ss -Hltn", check=False)
        missing = [p for p in ports if not re.search(rf":{p}\s", listed)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise VMError(f"guest ports not listening after {timeout:.0f} s: {missing}")
        time.sleep(2)


def end_initial_sync(vm: VM, timeout: float = 600) -> None:
    """Leave the initial sync as a box in steady state has: a recent block ends it, the
    node service lowers bitcoind's cache and has it restarted; back once bitcoind answers.
    Measurements of steady state start after this (else they catch that restart)."""
    conf = "/etc/bitcoin/bitcoin.conf"
    if "after initial block download" not in vm.ssh(f"cat {conf}"):
        return  # already steady (an earlier test mined)
    vm.ssh(MINE.format(n=1))
    deadline = time.monotonic() + timeout
    while "after initial block download" in vm.ssh(f"cat {conf}", check=False) \
            or "RUNNING" not in vm.ssh("supervisorctl status bitcoind", check=False) \
            or not vm.ssh(f"{GUEST_CLI} getblockcount", check=False).strip():
        if time.monotonic() > deadline:
            raise VMError("bitcoind never left the initial sync's settings")
        time.sleep(5)


def fsck_results(vm: VM) -> dict[str, str]:
    """hearth-fsck-report's lines on this boot's console: filesystem -> result."""
    vm.wait_for(r"hearth-fsck: data partition: ", BOOT_TIMEOUT)
    pattern = r"hearth-fsck: (root filesystem|boot partition|data partition): (.*?)\s*$"
    found = dict(re.findall(pattern, vm.console_text(), re.M))
    want = {"root filesystem", "boot partition", "data partition"}
    if set(found) != want:
        # journald forwards each line to the serial console on its own; under systemd 257's
        # terminal queries one can go missing there (seen once, 2026-12-04): the journal
        # has the report whole.
        vm.wait_ssh(BOOT_TIMEOUT)
        journal = vm.ssh("journalctl -b -o cat -u hearth-fsck-report", check=False)
        found = dict(re.findall(pattern, journal, re.M))
        if set(found) != want:
            raise VMError(f"no fsck report for every filesystem: {found}")
    return found


def wait_index_matches_bitcoind(vm: VM, timeout: float = 600) -> int:
    """The indexer's tip (over Electrum, from the host) is bitcoind's tip, header for header."""
    deadline = time.monotonic() + timeout
    while True:
        tip = electrum_request(vm.electrum_port, "blockchain.headers.subscribe", [])
        best = vm.ssh(f"{GUEST_CLI} getbestblockhash").strip()
        truth = json.loads(vm.ssh(f"{GUEST_CLI} getblockheader {best}"))
        raw = vm.ssh(f"{GUEST_CLI} getblockheader {best} false").strip()
        if tip["height"] == truth["height"] and tip["hex"] == raw:
            return int(tip["height"])
        if time.monotonic() > deadline:
            raise VMError(f"index tip {tip['height']} != bitcoind's {truth['height']} after "
                          f"{timeout:.0f} s")
        time.sleep(5)
