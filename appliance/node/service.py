"""The ``node`` service: watches bitcoind and says what it is doing.

Stateless. Waits for bitcoind (a start before bitcoind means waiting, not a crash
loop), then logs every new tip from ZMQ ``hashblock`` and, while bitcoind is in
initial block download, its progress once a minute. On the box its snapshot also
feeds the status bus and the OLED's sync page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ..config import Config
from ..status import Phase, StatusPublisher
from .ibd_mode import apply_steady_dbcache
from .rpc import BitcoinRPC, NodeError
from .status import NodeStatus, fetch_node_status
from .zmq_sub import ZMQSubscriber

__all__ = ["main"]

log = logging.getLogger("node")

_PROGRESS_EVERY = 60.0


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "node") as bus, \
            BitcoinRPC.from_config(cfg) as rpc:
        sub = ZMQSubscriber.from_config(cfg, ["hashblock"])  # before the first RPC read
        try:
            log.info("waiting for bitcoind at %s", rpc.url)
            bus.update(phase=Phase.WAITING, detail="waiting for bitcoind")
            await rpc.wait_ready(timeout=float("inf"))
            status = await fetch_node_status(rpc, cfg)
            log.info("bitcoind ready: %s", "; ".join(s.strip() for s in status.describe()))
            publish(bus, status)
            if not status.initial_block_download:
                await _leave_ibd_mode(cfg, bus)
            await _follow(rpc, sub, cfg, status, bus)
        except Exception as exc:
            bus.update(phase=Phase.ERROR, last_error=exc)
            raise
        finally:
            sub.close()


async def _leave_ibd_mode(cfg: Config, bus: StatusPublisher) -> None:
    if not cfg.node.conf_file:
        return
    try:
        done = await apply_steady_dbcache(Path(cfg.node.conf_file))
    except Exception as exc:  # supervisord refused: keep serving with the big cache
        log.error("could not switch bitcoind to its steady dbcache: %s", exc)
        bus.update(last_error=f"dbcache switch failed: {exc}")
        return
    if done != "already steady":
        bus.event("dbcache_steady", done)


def publish(bus: StatusPublisher, status: NodeStatus) -> None:
    """The node's snapshot on the status bus (the OLED's sync page)."""
    ibd = status.initial_block_download
    bus.update(phase=Phase.SYNCING if ibd else Phase.READY,
               progress=status.progress if ibd else None,
               detail=f"block {status.blocks} of {status.headers}" if ibd else
               f"synced at {status.blocks}", last_error=None, counters={
                   "blocks": status.blocks, "headers": status.headers, "peers": status.peers,
                   "prune_height": status.prune_height or 0,
                   "size_on_disk_bytes": status.size_on_disk,
                   "disk_free_bytes": status.disk_free if status.disk_free is not None else -1})


async def _follow(rpc: BitcoinRPC, sub: ZMQSubscriber, cfg: Config, status: NodeStatus,
                  bus: StatusPublisher) -> None:
    last_report = time.monotonic()
    last_tip = status.best_block_hash
    was_ibd = status.initial_block_download
    notes = sub.__aiter__()
    while True:
        try:
            note = await asyncio.wait_for(notes.__anext__(), timeout=_PROGRESS_EVERY)
        except TimeoutError:
            note = None
        except StopAsyncIteration:
            return
        try:
            status = await fetch_node_status(rpc, cfg)
        except NodeError as exc:
            log.warning("bitcoind unavailable: %s", exc)
            bus.update(phase=Phase.DEGRADED, detail="bitcoind not answering", last_error=exc)
            await rpc.wait_ready(timeout=float("inf"))
            continue
        publish(bus, status)
        if note is not None and (note.gap or note.resync):
            log.info("zmq: %s", "bitcoind restarted" if note.resync else f"{note.gap} missed")
        if was_ibd and not status.initial_block_download:
            await _leave_ibd_mode(cfg, bus)
        was_ibd = status.initial_block_download
        if status.best_block_hash != last_tip and not status.initial_block_download:
            log.info("new tip %d %s", status.blocks, status.best_block_hash)
            last_tip = status.best_block_hash
        elif time.monotonic() - last_report >= _PROGRESS_EVERY or note is None:
            if status.initial_block_download:
                log.info("syncing: block %d of %d headers (%.2f%%), %d peers", status.blocks,
                         status.headers, status.progress * 100, status.peers)
            last_report = time.monotonic()
    last_tip = status.best_block_hash
