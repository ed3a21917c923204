"""After the initial sync: give bitcoind its steady-state dbcache back.

During initial block download a big dbcache (a quarter of RAM) saves hours and many GB
of SD-card writes; afterwards that RAM is better left to the indexer and the page cache
(a Pi 4 has 4 GB). bitcoind reads dbcache only at start, so once the sync is over the
node service rewrites the bitcoin.conf that first boot generated and asks supervisord
to restart bitcoind (a clean stop flushes the chainstate: stopwaitsecs is 600 for it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

from ..durability import atomic_file
from ..supervision.rpc import RpcFactory, supervisor_rpc
from .bitcoin_conf import leave_ibd_mode

__all__ = ["apply_steady_dbcache", "replace_keeping_access"]

log = logging.getLogger("node")


def replace_keeping_access(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically, keeping its mode and group.

    On the image first boot writes bitcoin.conf 0640 hearth:bitcoin in /etc/bitcoin
    (0750 hearth:bitcoin): bitcoind reads it through its group, so a copy with hearth's
    own group or mode 0600 would stop bitcoind at its restart. hearth is in group
    bitcoin, which lets it give the new file that group.
    """
    st = path.stat()
    with atomic_file(path, stat.S_IMODE(st.st_mode)) as fh:
        os.fchown(fh.fileno(), -1, st.st_gid)
        fh.write(data)


async def apply_steady_dbcache(conf_file: Path, rpc: RpcFactory | None = None,
                               program: str = "bitcoind") -> str:
    """Rewrite ``conf_file`` and restart ``program`` if the file was written for the
    initial sync; returns what was done (for the log and the status bus)."""
    try:
        text = conf_file.read_text()
    except OSError as exc:
        return f"cannot read {conf_file}: {exc.strerror}"
    steady = leave_ibd_mode(text)
    if steady is None:
        return "already steady"
    replace_keeping_access(conf_file, steady.encode())
    dbcache = next(ln for ln in steady.splitlines() if ln.startswith("dbcache="))
    rpc = rpc if rpc is not None else supervisor_rpc()
    if rpc is None:
        log.warning("initial sync over: %s written to %s; restart bitcoind to apply", dbcache,
                    conf_file)
        return f"{dbcache} written; restart bitcoind to apply"
    factory = rpc

    def restart() -> None:
        supervisor = factory()
        supervisor.stopProcess(program, True)  # waits for the chainstate flush
        supervisor.startProcess(program, True)

    log.info("initial sync over: %s, restarting %s", dbcache, program)
    await asyncio.to_thread(restart)
    return f"{dbcache}, {program} restarted"
