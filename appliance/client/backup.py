"""The client side of the backup protocol (docs/backup.md): one Noise connection to the box.

Kept free of the appliance's server-side dependencies (zmq, plyvel ...): it also runs in
the Core Lightning plugin's own virtualenv, next to pyln-client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backup.wire import recv_header, recv_payload, send_message
from ..transport.noise import Keypair
from ..transport.stream import STREAM_ERRORS, NoiseStream, connect

__all__ = ["DEFAULT_PORT", "BackupClient", "BackupRefused", "BoxAddress", "StreamData", "GONE"]

DEFAULT_PORT = 50004
#: what a vanished box or network raises
GONE: tuple[type[BaseException], ...] = (*STREAM_ERRORS, ConnectionError, OSError, TimeoutError)


class BackupRefused(Exception):
    """The box answered, and said no (``code`` as in docs/backup.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BoxAddress:
    host: str
    port: int
    key: bytes  # the box's static public key

    @classmethod
    def from_state(cls, state: Path, port: int) -> BoxAddress:
        try:
            box = json.loads((state / "box.json").read_text())
        except FileNotFoundError:
            raise SystemExit("appliance-client: not paired yet: appliance-client pair 'HEARTH:...'") from None
        return cls(str(box["host"]), port, bytes.fromhex(box["key"]))

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "key": self.key.hex()}


@dataclass
class StreamData:
    info: dict[str, Any]
    snapshot_version: int
    snapshot: bytes
    records: list[tuple[int, bytes]]


class BackupClient:
    def __init__(self, stream: NoiseStream, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout

    @classmethod
    async def connect(cls, box: BoxAddress, key: Keypair, timeout: float = 15.0) -> BackupClient:
        return cls(await connect(box.host, box.port, key, box.key, timeout=timeout), timeout)

    def close(self) -> None:
        self.stream.close()

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        if payload:
            header = {**header, "size": len(payload)}
        await send_message(self.stream, header, [payload] if payload else [])

    async def reply(self) -> dict[str, Any]:
        header = await recv_header(self.stream, timeout=self.timeout)
        if header.get("size"):
            raise BackupRefused("bad-reply", "unexpected payload in a reply")
        return _check(header)

    async def request(self, header: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        await self.send(header, payload)
        return await self.reply()

    async def pipeline(self, requests: Iterable[tuple[dict[str, Any], bytes]]) -> list[dict[str, Any]]:
        """Send several requests, then read their replies: one round trip for all."""
        sent = 0
        for header, payload in requests:
            await self.send(header, payload)
            sent += 1
        replies = [await recv_header(self.stream, timeout=self.timeout) for _ in range(sent)]
        for r in replies:
            _check(r)
        return replies

    async def read(self, sid: str, generation: int | None = None) -> StreamData:
        req: dict[str, Any] = {"op": "read", "stream": sid}
        if generation is not None:
            req["generation"] = generation
        await self.send(req)
        header = _check(await recv_header(self.stream, timeout=self.timeout))
        data = b"".join([part async for part in recv_payload(self.stream, int(header["size"]))])
        snap = header["snapshot"]
        snapshot, offset = data[:snap["size"]], snap["size"]
        records: list[tuple[int, bytes]] = []
        for version, size in header["records"]:
            records.append((int(version), data[offset:offset + size]))
            offset += size
        return StreamData(header["info"], int(snap["version"]), snapshot, records)


def _check(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("ok"):
        raise BackupRefused(str(reply.get("code", "error")), str(reply.get("error", "refused")))
    return reply
