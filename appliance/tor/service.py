"""The ``tor`` service: write the onion key and torrc, run tor, report its bootstrap.

tor runs as this process's child (same user, so it owns its HiddenServiceDir as tor
demands); its notice log comes through a pipe, goes to our log, and each
``Bootstrapped N%`` line goes to the status bus (counter ``tor_bootstrap``), the OLED
and ``appliance status``. If tor exits, so does the service, and supervisord starts
both again. The key files are rewritten from ``hsm_secret`` at every start, so a
restored box serves the original address after one restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..config import Config
from ..durability import write_atomic
from ..identity import load_or_create_hsm_secret
from ..status import Phase, StatusPublisher
from ..status.fields import TOR_BOOTSTRAP
from .keys import derive_onion_key, write_service_dir
from .progress import parse_bootstrap
from .torrc import render_torrc

__all__ = ["main"]

log = logging.getLogger("tor")

_STOP_WAIT_S = 10.0


def prepare(cfg: Config) -> None:
    """Write the HiddenServiceDir (key, hostname) and the torrc tor is started with."""
    key = derive_onion_key(load_or_create_hsm_secret(cfg.hsm_secret_file))
    write_service_dir(cfg.onion_service_dir, key)
    (cfg.service_dir("tor") / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(cfg.torrc_file, render_torrc(cfg).encode(), 0o600)


async def _follow(proc: asyncio.subprocess.Process, bus: StatusPublisher) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        log.info("%s", line)
        percent = parse_bootstrap(line)
        if percent is None:
            continue
        if percent >= 100:
            bus.update(phase=Phase.READY, detail="onion service reachable (bootstrapped 100%)",
                       counters={TOR_BOOTSTRAP: 100}, last_error=None)
        else:
            bus.update(phase=Phase.SYNCING, progress=percent / 100,
                       detail=f"connecting to Tor: bootstrapped {percent}%",
                       counters={TOR_BOOTSTRAP: percent})


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "tor") as bus:
        if not cfg.tor.enabled:
            bus.update(phase=Phase.READY, detail="off ([tor] enabled = false)",
                       counters={TOR_BOOTSTRAP: -1})
            await asyncio.Event().wait()  # stay RUNNING under supervisord, doing nothing
        await asyncio.to_thread(prepare, cfg)
        bus.update(phase=Phase.STARTING, detail="starting tor", counters={TOR_BOOTSTRAP: 0})
        # An empty defaults file: only our torrc counts, not a stray /etc/tor/torrc-defaults.
        proc = await asyncio.create_subprocess_exec(
            cfg.tor.binary, "-f", str(cfg.torrc_file), "--defaults-torrc", "/dev/null",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        log.info("tor started (pid %d) with %s", proc.pid, cfg.torrc_file)
        try:
            await _follow(proc, bus)
            code = await proc.wait()
            raise RuntimeError(f"tor exited with status {code} (its log is above)")
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), _STOP_WAIT_S)
                except TimeoutError:
                    proc.kill()
                    with contextlib.suppress(ProcessLookupError):
                        await proc.wait()
