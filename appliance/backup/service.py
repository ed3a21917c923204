"""The ``backup`` service's composition root: store, Noise listener, control socket, status.

Control commands on ``<run_dir>/backup.ctl`` (see appliance/control.py):

* ``export`` -> ``{"path": "<data_dir>/backup/export.bin"}``: one consistent file of every
  stream's current generation, ciphertext only (format in :mod:`.export`); the USB
  agent puts it into the stick backup.
* ``status`` -> counters and per-client usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import Config
from ..control import ControlServer
from ..identity import derive_secp256k1, load_or_create_hsm_secret
from ..status import Phase, StatusPublisher
from .export import capture_all, write_export
from .server import BackupServer, PairedKeys
from .store import Store

__all__ = ["BackupService", "main"]

log = logging.getLogger("backup")


class BackupService:
    def __init__(self, cfg: Config, status: StatusPublisher) -> None:
        bc = cfg.backup
        self.cfg = cfg
        self.status = status
        self.dir = cfg.service_dir("backup")
        self.store = Store(self.dir, quota_bytes=bc.quota_mib << 20, file_versions=bc.file_versions,
                           compact_min_bytes=bc.compact_min_kib << 10)
        if self.store.repaired:
            log.warning("truncated %d torn log tails (unacknowledged writes cut by a crash)",
                        self.store.repaired)
        node_key = derive_secp256k1(load_or_create_hsm_secret(cfg.hsm_secret_file), "noise-static")
        # The pairing gate (indexer service) owns the whitelist; we only read it.
        paired = PairedKeys(cfg.service_dir("indexer") / "paired-clients.json")
        self.server = BackupServer(self.store, node_key, paired, on_change=self._publish)
        self.control = ControlServer(cfg.control_endpoint("backup"), {
            "export": self.cmd_export,
            "status": self.cmd_status,
        })
        self._export_lock = asyncio.Lock()
        self.last_export: float | None = None

    @property
    def export_path(self) -> Any:
        return self.dir / "export.bin"

    async def cmd_export(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self._export_lock:
            captures = capture_all(self.store)  # the point in time, on the loop
            path = await asyncio.to_thread(write_export, captures, self.export_path)
            self.last_export = time.time()
            log.info("export written: %d streams", len(captures))
            return {"path": str(path), "streams": len(captures)}

    async def cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        c = self.server.counters
        return {"port": self.server.port if self.server.server else None,
                "streams": len(self.store.streams()), "bytes": self.store.total_bytes,
                "last_write": self.store.last_write or None, "connected": len(self.server.live),
                "clients": {o: self.store.usage(o) for o in sorted(self.store.owners())},
                "quota": self.store.quota_bytes, "counters": dict(c.__dict__)}

    def _publish(self) -> None:
        c = self.server.counters
        last = self.store.last_write
        self.status.update(counters={
            "clients": len(self.store.owners()), "connected": len(self.server.live),
            "streams": len(self.store.streams()), "bytes": self.store.total_bytes,
            "last_write": int(last), "appends": c.appends, "snapshots": c.snapshots,
            "refused": c.refused, "errors": c.errors})

    async def run(self) -> None:
        bc = self.cfg.backup
        if bc.port:
            await self.server.start(bc.bind, bc.port)
        self._publish()
        self.status.update(phase=Phase.READY,
                           detail=f"backups on port {bc.port}" if bc.port else "listener off")
        try:
            await self.control.serve()
        finally:
            await self.server.close()
            self.store.close()


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "backup") as status:
        try:
            await BackupService(cfg, status).run()
        except Exception as exc:
            status.update(phase=Phase.ERROR, last_error=exc)
            raise
