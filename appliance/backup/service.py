"""The ``backup`` service's composition root: store, Noise listener, control socket, status.

Control commands on ``<run_dir>/backup.ctl`` (types in appliance/control/messages.py):

* ``export`` -> ``{"path": "<data_dir>/backup/export.bin"}``: one consistent file of every
  stream's current generation, ciphertext only (format in :mod:`.export`); the USB
  agent puts it into the stick backup.
* ``status`` -> counters and per-client usage.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..config import Config
from ..control import ControlServer
from ..control.messages import BackupStatus, BackupStatusReply, Export, Exported
from ..durability import DISK_FULL_TEXT
from ..identity import derive_secp256k1, load_or_create_hsm_secret
from ..status import Phase, StatusPublisher
from .export import capture_all, write_export
from .server import BackupServer, PairedKeys
from .store import Store

__all__ = ["BackupService", "main"]

log = logging.getLogger("backup")

_ROOM_CHECK_S = 10.0
_ROOM_BYTES = 1 << 20  # free again: a record fits (most are a few KiB)


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
        paired = PairedKeys(cfg.paired_clients_file)
        self.server = BackupServer(self.store, node_key, paired, on_change=self._publish)
        self.control = ControlServer(cfg.control_endpoint("backup"), {
            Export: self.cmd_export,
            BackupStatus: self.cmd_status,
        })
        self._export_lock = asyncio.Lock()
        self._shown_full = False
        bc_port = cfg.backup.port
        self._ready_detail = f"backups on port {bc_port}" if bc_port else "listener off"
        self.last_export: float | None = None

    async def cmd_export(self, req: Export) -> Exported:
        async with self._export_lock:
            captures = capture_all(self.store)  # the point in time, on the loop
            path = await asyncio.to_thread(write_export, captures, self.cfg.backup_export_file)
            self.last_export = time.time()
            log.info("export written: %d streams", len(captures))
            return Exported(path=str(path), streams=len(captures))

    async def cmd_status(self, req: BackupStatus) -> BackupStatusReply:
        c = self.server.counters
        return BackupStatusReply(
            port=self.server.port if self.server.server else None,
            streams=len(self.store.streams()), bytes=self.store.total_bytes,
            last_write=self.store.last_write or None, connected=len(self.server.live),
            clients={o: self.store.usage(o) for o in sorted(self.store.owners())},
            quota=self.store.quota_bytes, counters=dict(c.__dict__))

    def _publish(self) -> None:
        c = self.server.counters
        last = self.store.last_write
        full = self.store.disk_full
        self.status.update(counters={
            "clients": len(self.store.owners()), "connected": len(self.server.live),
            "streams": len(self.store.streams()), "bytes": self.store.total_bytes,
            "last_write": int(last), "appends": c.appends, "snapshots": c.snapshots,
            "refused": c.refused, "errors": c.errors, "disk_full": int(full),
            "disk_full_refused": c.disk_full})
        if full != self._shown_full:  # phase and last_error only on a change (restamps)
            self._shown_full = full
            if full:
                self.status.update(phase=Phase.DEGRADED, detail="not storing: disk full",
                                   last_error=DISK_FULL_TEXT)
            else:
                self.status.update(phase=Phase.READY, detail=self._ready_detail)

    async def _watch_room(self) -> None:
        """A refusal for a full disk stays shown until there is room again."""
        while True:
            await asyncio.sleep(_ROOM_CHECK_S)
            if self.store.disk_full and self.store.room() >= _ROOM_BYTES:
                self.store.disk_full = False
                self._publish()

    async def run(self) -> None:
        bc = self.cfg.backup
        if bc.port:
            await self.server.start(bc.bind, bc.port)
        self._publish()
        self.status.update(phase=Phase.READY, detail=self._ready_detail)
        room = asyncio.create_task(self._watch_room(), name="watch-room")
        try:
            await self.control.serve()
        finally:
            room.cancel()
            await self.server.close()
            self.store.close()


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "backup") as status:
        try:
            await BackupService(cfg, status).run()
        except Exception as exc:
            status.update(phase=Phase.ERROR, last_error=exc)
            raise
