"""Repairs the listener makes when a program's log names a failure it knows how to fix.

One so far: bitcoind stopping at every start with a damaged block filter index after a
crash (:mod:`appliance.node.filter_repair`). The listener runs as ``hearth`` and cannot
touch bitcoind's files, so the repair is its own supervisord program
(``[program:bitcoind-repair]``: ``user=bitcoin``, ``autostart=false``), and this module
drives it over XML-RPC: stop bitcoind (it may be between two failed starts), run the
repair to its end, start bitcoind again.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..node.filter_repair import DAMAGED

__all__ = ["BITCOIND", "REPAIR_PROGRAM", "needs_repair", "run_repair"]

BITCOIND = "bitcoind"
REPAIR_PROGRAM = "bitcoind-repair"
_DONE = ("EXITED", "FATAL", "BACKOFF", "STOPPED")
_REPAIR_TIMEOUT_S = 300.0  # a LevelDB open and one write; generous for a slow card


def needs_repair(name: str, log_tail: str) -> bool:
    return name == BITCOIND and DAMAGED in log_tail


def run_repair(proxy: Any, sleep: float = 0.2) -> tuple[bool, str]:
    """Blocking (a worker thread): (repaired, what the repair program said)."""
    with contextlib.suppress(Exception):  # NOT_RUNNING: FATAL already, or between tries
        proxy.stopProcess(BITCOIND, True)
    before = proxy.getProcessInfo(REPAIR_PROGRAM)
    proxy.startProcess(REPAIR_PROGRAM, False)
    deadline = time.monotonic() + _REPAIR_TIMEOUT_S
    while True:
        info = proxy.getProcessInfo(REPAIR_PROGRAM)
        started_again = (info["start"], info["pid"]) != (before["start"], before["pid"])
        if started_again and info["statename"] in _DONE:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                proxy.stopProcess(REPAIR_PROGRAM, True)
            break
        time.sleep(sleep)
    said = str(proxy.tailProcessStdoutLog(REPAIR_PROGRAM, 0, 1024)[0]).strip().splitlines()
    proxy.startProcess(BITCOIND, False)
    ok = info["statename"] == "EXITED" and int(info["exitstatus"]) == 0
    return ok, said[-1] if said else ""
