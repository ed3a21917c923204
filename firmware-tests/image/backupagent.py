"""A paired Lightning node's backup traffic to the guest's backup agent, from the host.

The host pairs the way an owner's computer does (the box's pairing code, redeemed over
Noise by ``appliance-client pair``) and then streams through QEMU's forwards what a Core
Lightning node sends (a snapshot, then one sealed record per ``db_write``), plus pushes
of a generic file stream (lnd's ``channel.backup``: a new version each time). It keeps
the digest of everything the box acknowledged and of the one request in flight, so a
test can check the store after a power cut: every acknowledged record there, byte for
byte, and nothing half-written served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functional.framework.util import CLIENT

from appliance.client.backup import GONE, BackupClient, BoxAddress
from appliance.pairing.payload import PairingPayload
from appliance.transport.noise import Keypair

from .vm import GUEST_APPLIANCE, VM, VMError

#: a file push every this many appends, so the cut can land in either kind of write
FILE_EVERY = 8


def pair(vm: VM, state: Path) -> tuple[BoxAddress, Keypair]:
    """Pair a new client key (kept in ``state``) with the guest; the backup agent's address."""
    # The gate opens once the recovery phrase is acknowledged (after the restore stick
    # is pulled): until then ``show`` says closed.
    deadline = time.monotonic() + 300
    while not (code := vm.ssh(f"{GUEST_APPLIANCE} pairing open >/dev/null && "
                              f"{GUEST_APPLIANCE} pairing show", check=False).strip()).startswith("HEARTH:"):
        if time.monotonic() > deadline:
            raise VMError("the box's pairing gate never opened")
        time.sleep(5)
    shown = PairingPayload.decode(code)
    # The code names the guest's own address; the host reaches it through the forward.
    code = PairingPayload(shown.pubkey, "127.0.0.1", vm.noise_port, shown.token).encode()
    subprocess.run([CLIENT, "--state-dir", str(state), "pair", code, "--label", "firmware-test"],
                   check=True, capture_output=True, text=True, timeout=300)
    box = json.loads((state / "box.json").read_text())
    return (BoxAddress("127.0.0.1", vm.backup_port, bytes.fromhex(box["key"])),
            Keypair((state / "client_key").read_bytes()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Sent:
    """What the box acknowledged, and the one request it had not answered yet."""

    acked: dict[tuple[str, int], str] = field(default_factory=dict)  # (stream, version) -> sha256
    in_flight: dict[tuple[str, int], str] = field(default_factory=dict)
    bytes_acked: int = 0

    def count(self, stream: str) -> int:
        return sum(1 for s, _ in self.acked if s == stream)

    def last(self, stream: str) -> int:
        return max((v for s, v in self.acked if s == stream), default=-1)

    def matches(self, stream: str, version: int, data: bytes) -> bool:
        """``data`` is exactly what was sent as this version (acknowledged or in flight)."""
        digest = _digest(data)
        key = (stream, version)
        return self.acked.get(key) == digest or self.in_flight.get(key) == digest


class Writer(threading.Thread):
    """Streams records (4-64 KiB) and file versions (``file_size``) until stopped, the
    connection dies (the cut) or ``budget`` bytes were acknowledged."""

    def __init__(self, box: BoxAddress, key: Keypair, tag: str, *, file_size: int, budget: int) -> None:
        super().__init__(daemon=True)
        self.box, self.key, self.file_size, self.budget = box, key, file_size, budget
        # the streams this writer owns: each test its own
        self.cln = hashlib.sha256(f"{tag}/cln".encode()).hexdigest()
        self.file = hashlib.sha256(f"{tag}/file".encode()).hexdigest()
        self.sent = Sent()
        self.stop = threading.Event()
        self.ended: BaseException | None = None  # why it stopped: a connection error is the cut

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.ended = exc

    async def _send(self, c: BackupClient, header: dict[str, Any], payload: bytes) -> None:
        key = (str(header["stream"]), int(header["version"]))
        self.sent.in_flight = {key: _digest(payload)}
        await c.request(header, payload)
        self.sent.acked[key] = self.sent.in_flight.pop(key)
        self.sent.bytes_acked += len(payload)

    async def _main(self) -> None:
        c = await BackupClient.connect(self.box, self.key, timeout=120)
        try:
            await self._send(c, {"op": "snapshot", "stream": self.cln, "kind": "cln", "version": 0},
                             secrets.token_bytes(32 * 1024))
            version = 1
            while not self.stop.is_set() and self.sent.bytes_acked < self.budget:
                record = os.urandom(secrets.randbelow(60 * 1024) + 4 * 1024)
                await self._send(c, {"op": "append", "stream": self.cln, "version": version}, record)
                if version % FILE_EVERY == 1:
                    await self._send(c, {"op": "snapshot", "stream": self.file, "kind": "file",
                                         "version": version}, os.urandom(self.file_size))
                version += 1
        finally:
            c.close()


async def check_store(w: Writer) -> str:
    """After the cut: the store answers, holds every acknowledged record byte for byte with
    no gap, and serves as newest file version a complete one; a summary line."""
    sent, cln_sid, file_sid = w.sent, w.cln, w.file
    c = await BackupClient.connect(w.box, w.key, timeout=120)
    try:
        listing = await c.request({"op": "list"})
        assert {s["stream"] for s in listing["streams"]} >= {cln_sid}, listing
        cln = await c.read(cln_sid)
        assert sent.matches(cln_sid, 0, cln.snapshot), "the cln snapshot is not the one sent"
        versions = [v for v, _ in cln.records]
        assert versions == list(range(1, len(versions) + 1)), f"records out of order: {versions}"
        last = sent.last(cln_sid)
        assert len(versions) >= last, f"acknowledged up to {last}, the box has {len(versions)}"
        bad = [v for v, data in cln.records if not sent.matches(cln_sid, v, data)]
        assert not bad, f"records {bad} differ from what was sent (half-written?)"
        summary = f"cln stream: {len(versions)} records (acknowledged {last})"
        if sent.count(file_sid):
            f = await c.read(file_sid)
            assert f.snapshot_version >= sent.last(file_sid), \
                f"file version {f.snapshot_version} served, {sent.last(file_sid)} was acknowledged"
            assert sent.matches(file_sid, f.snapshot_version, f.snapshot), \
                f"the newest file version {f.snapshot_version} is not what was sent (half-written?)"
            summary += (f"; file stream: newest {f.snapshot_version} complete "
                        f"(acknowledged {sent.last(file_sid)})")
        return summary
    finally:
        c.close()


__all__ = ["GONE", "Sent", "Writer", "check_store", "pair"]
