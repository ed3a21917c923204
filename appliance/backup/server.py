"""The backup agent's Noise listener: paired clients store and read their sealed backups.

Authentication is the Noise handshake itself: the client's static key is known after
act three and must be in the pairing whitelist (the file the pairing gate writes, read
again whenever it changes, so a new pairing or a revocation takes effect on the next
request). An unpaired key gets one clear error reply and the connection is closed; only
someone who knows the box's public key (from the pairing QR) can get that far.

Every write is on the card before its reply goes out (see :mod:`.store`), so a reply
``{"ok": true}`` is the acknowledgement the client waits for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..identity import NodeKey
from ..pairing.store import PairedKeys
from ..transport.noise import Keypair
from ..transport.stream import STREAM_ERRORS, NoiseListener, NoiseServer, NoiseStream, start_server
from .store import MAX_RECORD, SnapshotWriter, Store, StoreError
from .wire import PROTOCOL_VERSION, WireError, recv_header, recv_payload, send_message

__all__ = ["BackupCounters", "BackupServer", "PairedKeys"]  # PairedKeys: from pairing.store

log = logging.getLogger("backup")

_GONE: tuple[type[BaseException], ...] = (*STREAM_ERRORS, ConnectionError)
_IDLE_TIMEOUT = 3600.0  # a plugin holds its connection open between db_writes


@dataclass
class BackupCounters:
    connections: int = 0
    refused: int = 0  # unpaired keys turned away
    appends: int = 0
    snapshots: int = 0
    reads: int = 0
    errors: int = 0  # refused requests (quota, gap, bad input, disk full)
    disk_full: int = 0  # writes refused because the disk was full
    bytes_in: int = 0


@dataclass
class BackupServer(NoiseListener):
    store: Store
    node_key: NodeKey
    paired: PairedKeys
    on_change: Callable[[], None] = lambda: None
    counters: BackupCounters = field(default_factory=BackupCounters)
    server: NoiseServer | None = None
    live: dict[bytes, int] = field(default_factory=dict)  # client key -> open connections

    async def start(self, host: str, port: int) -> None:
        self.server = await start_server(self._serve, host, port, Keypair.of(self.node_key))
        log.info("backup agent on port %d: %d streams, %d bytes", self.port,
                 len(self.store.streams()), self.store.total_bytes)

    async def _serve(self, stream: NoiseStream) -> None:
        pubkey = stream.remote_static
        self.counters.connections += 1
        owner = pubkey.hex()
        counted = False
        try:
            while True:
                try:
                    header = await recv_header(stream, timeout=_IDLE_TIMEOUT)
                except WireError as exc:
                    self.counters.errors += 1
                    await self._reply(stream, {"ok": False, "code": "bad-request", "error": str(exc)})
                    return  # cannot tell where the next message starts
                if pubkey not in self.paired:
                    self.counters.refused += 1
                    log.info("refused backup request from unpaired key %s", owner[:16])
                    await self._reply(stream, {
                        "ok": False, "code": "unpaired",
                        "error": "this client's key is not paired with the box "
                                 "(appliance-client pair), or was revoked"})
                    return
                if not counted:
                    counted = True
                    self.live[pubkey] = self.live.get(pubkey, 0) + 1
                if not await self._handle(stream, owner, header):
                    return
        except _GONE:
            pass
        finally:
            if counted:
                self.live[pubkey] -= 1
                if not self.live[pubkey]:
                    del self.live[pubkey]
            self.on_change()

    async def _reply(self, stream: NoiseStream, header: dict[str, Any], payload: Any = ()) -> None:
        with contextlib.suppress(*_GONE):
            await send_message(stream, header, payload)

    async def _drain(self, stream: NoiseStream, size: int) -> None:
        async for _ in recv_payload(stream, size):
            pass

    async def _handle(self, stream: NoiseStream, owner: str, req: dict[str, Any]) -> bool:
        """One request; False closes the connection (the stream cannot be resynchronised)."""
        op = req.get("op")
        size = int(req.get("size", 0))
        try:
            if op == "hello":
                await self._reply(stream, {"ok": True, "v": PROTOCOL_VERSION,
                                           "quota": self.store.quota_bytes,
                                           "used": self.store.usage(owner)})
            elif op == "info":
                info = self.store.info(_stream_id(req))
                await self._reply(stream, {"ok": True, "exists": info is not None,
                                           **(info.as_dict() if info else {})})
            elif op == "list":
                await self._reply(stream, {"ok": True, "quota": self.store.quota_bytes,
                                           "used": self.store.usage(owner),
                                           "streams": [i.as_dict() for i in self.store.streams(owner)]})
            elif op == "append":
                return await self._append(stream, owner, req, size)
            elif op == "snapshot":
                return await self._snapshot(stream, owner, req, size)
            elif op == "read":
                await self._read(stream, req)
            else:
                raise StoreError("bad-request", f"unknown op {op!r}")
            if op not in ("append", "snapshot") and size:
                await self._drain(stream, size)  # an op without payload given one
        except StoreError as exc:
            self.counters.errors += 1
            log.info("backup request %s from %s refused: %s", op, owner[:16], exc)
            if op not in ("append", "snapshot") and size:
                return False
            await self._reply(stream, {"ok": False, "code": exc.code, "error": str(exc)})
        return True

    async def _append(self, stream: NoiseStream, owner: str, req: dict[str, Any], size: int) -> bool:
        if size > MAX_RECORD:
            await self._reply(stream, {"ok": False, "code": "too-large",
                                       "error": f"a record is at most {MAX_RECORD} bytes"})
            return False
        payload = b"".join([part async for part in recv_payload(stream, size)])
        self.counters.bytes_in += size
        try:
            result = self.store.append(owner, _stream_id(req), _u32(req.get("version")), payload)
        except StoreError as exc:
            self._refused("append", owner, exc)
            await self._reply(stream, {"ok": False, "code": exc.code, "error": str(exc)})
            return True
        self.counters.appends += 1
        self.on_change()
        await self._reply(stream, {"ok": True, "version": result.version, "replaced": result.replaced,
                                   "snapshot_wanted": result.snapshot_wanted})
        return True

    def _refused(self, op: str, owner: str, exc: StoreError) -> None:
        self.counters.errors += 1
        if exc.code == "disk-full":
            self.counters.disk_full += 1
            self.on_change()  # the status (and the OLED) say so now, not at the next write
        log.info("%s refused for %s: %s", op, owner[:16], exc)

    async def _snapshot(self, stream: NoiseStream, owner: str, req: dict[str, Any], size: int) -> bool:
        try:
            writer: SnapshotWriter | None = self.store.begin_snapshot(
                owner, _stream_id(req), str(req.get("kind")), _u32(req.get("version")), size,
                takeover=bool(req.get("takeover")), carry=bool(req.get("carry")))
        except StoreError as exc:
            self._refused("snapshot", owner, exc)
            await self._reply(stream, {"ok": False, "code": exc.code, "error": str(exc)})
            if size > 4 * self.store.quota_bytes:
                return False  # not worth reading gigabytes just to throw them away
            await self._drain(stream, size)
            return True
        assert writer is not None
        refused: StoreError | None = None
        try:
            async for part in recv_payload(stream, size):
                if refused is None:
                    try:
                        writer.write(part)
                    except StoreError as exc:  # the disk filled up mid-upload
                        refused = exc  # read the rest: the next request follows it
            self.counters.bytes_in += size
            if refused is None:
                try:
                    info = writer.commit()
                except StoreError as exc:  # stale carry, or the disk is full
                    refused = exc
            writer = None
        finally:
            if writer is not None:
                writer.abort()
        if refused is not None:
            self._refused("snapshot", owner, refused)
            await self._reply(stream, {"ok": False, "code": refused.code, "error": str(refused)})
            return True
        self.counters.snapshots += 1
        self.on_change()
        await self._reply(stream, {"ok": True, **info.as_dict()})
        return True

    async def _read(self, stream: NoiseStream, req: dict[str, Any]) -> None:
        generation = req.get("generation")
        cap = self.store.capture(_stream_id(req), None if generation is None else int(generation))
        try:
            total = cap.snap_size + sum(r.size for r in cap.records)
            header = {"ok": True, "size": total, "info": cap.info.as_dict(),
                      "snapshot": {"version": cap.snap_version, "size": cap.snap_size},
                      "records": [[r.version, r.size] for r in cap.records]}

            def payload() -> Any:
                yield from cap.read_snapshot()
                for rec in cap.records:
                    yield cap.read_record(rec)

            self.counters.reads += 1
            await send_message(stream, header, payload())
        finally:
            cap.close()


def _stream_id(req: dict[str, Any]) -> str:
    sid = req.get("stream")
    if not isinstance(sid, str) or len(sid) != 64 or sid.strip("0123456789abcdef"):
        raise StoreError("bad-request", "stream must be 64 lower-case hex digits")
    return sid


def _u32(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
        raise StoreError("bad-request", "version must be an integer in [0, 2^32)")
    return value
