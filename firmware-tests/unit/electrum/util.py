"""Shared test helpers: a line-based Electrum client over real sockets and a server harness."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from appliance.electrum.admission import FairShare
from appliance.electrum.handlers import ServerInfo
from appliance.electrum.server import ElectrumServer, SessionManager
from appliance.electrum.session import SessionLimits

from .fakes import FakeBackend

__all__ = ["Client", "Harness", "RemoteError", "run", "serving"]

TIMEOUT = 5.0


def run(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    """Run one async test body, failing it rather than hanging."""
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


class RemoteError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class Client:
    """Speaks newline-delimited JSON-RPC 2.0, as Electrum does; keeps notifications aside."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.notifications: list[dict[str, Any]] = []
        self._next_id = 0

    @classmethod
    async def connect(cls, port: int, *, ssl_context: ssl.SSLContext | None = None,
                      server_hostname: str | None = None) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname=server_hostname,
            limit=1 << 25)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, payload: Any) -> None:
        await self.send_raw(json.dumps(payload).encode() + b"\n")

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next message, or None at end of stream."""
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            return None
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        """The whole response object to one request."""
        msg_id = self.new_id()
        await self.send({"jsonrpc": "2.0", "id": msg_id, "method": method,
                         "params": list(params)})
        return await self.response(msg_id)

    async def response(self, msg_id: Any) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            assert msg is not None, "connection closed while waiting for a response"
            if isinstance(msg, dict) and "method" in msg:
                self.notifications.append(msg)
                continue
            assert msg.get("id") == msg_id, msg
            assert msg["jsonrpc"] == "2.0"
            return dict(msg)

    async def request(self, method: str, *params: Any) -> Any:
        msg = await self.call(method, *params)
        if "error" in msg:
            raise RemoteError(msg["error"]["code"], msg["error"]["message"])
        return msg["result"]

    async def version(self, protocol: Any = ("1.4", "1.6")) -> list[str]:
        arg = list(protocol) if isinstance(protocol, tuple) else protocol
        result: list[str] = await self.request("server.version", "test-client 1.0", arg)
        return result

    async def notification(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.notifications:
            return self.notifications.pop(0)
        msg = await self.recv(timeout)
        assert isinstance(msg, dict) and "method" in msg, msg
        return msg

    async def no_message(self, wait: float = 0.2) -> bool:
        """True if nothing arrives within ``wait`` seconds."""
        try:
            await asyncio.wait_for(self.reader.readline(), wait)
        except TimeoutError:
            return True
        return False

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """Reads until end of stream; False if data still flows after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await self.writer.wait_closed()


@dataclass
class Harness:
    backend: FakeBackend
    manager: SessionManager
    server: ElectrumServer
    clients: list[Client]

    async def connect(self, *, negotiate: bool = True) -> Client:
        client = await Client.connect(self.server.tcp_port)
        self.clients.append(client)
        if negotiate:
            await client.version()
        return client


@contextlib.asynccontextmanager
async def serving(backend: FakeBackend | None = None, *, limits: SessionLimits | None = None,
                  info: ServerInfo | None = None, max_sessions: int = 100,
                  tls_port: int | None = None, share: FairShare | None = None,
                  ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Harness]:
    """A real server on 127.0.0.1 (ephemeral ports) around a fake backend."""
    backend = backend or FakeBackend()
    manager = SessionManager(backend, info=info, limits=limits, max_sessions=max_sessions,
                             share=share)
    server = ElectrumServer(manager, host="127.0.0.1", tcp_port=0, tls_port=tls_port,
                            ssl_context=ssl_context)
    await server.start()
    harness = Harness(backend, manager, server, [])
    try:
        yield harness
    finally:
        for client in harness.clients:
            await client.close()
        await server.close()
