"""The tower's TCP listeners: who may hold a connection, and for how long before a request.

aiohttp bounds nothing before a request's headers are parsed: a client that opens TLS and
never finishes the handshake, or sends its headers a byte a second, holds a socket (and,
for TLS, asyncio's 256 KiB buffer) for as long as it likes, and enough of them starve
everyone else. :class:`ConnectionGate` sits between the listening socket and aiohttp's
protocol, as the Electrum server does for its own (``appliance/electrum/server.py``):

* at most ``per_address`` connections from one address and ``max_connections`` in all
  (a connection over either is reset at once);
* TLS is started per connection, at most ``handshakes_per_address`` / ``max_handshakes``
  at once, and a handshake not done within ``handshake_timeout`` is dropped;
* a request's headers must be complete within ``header_timeout`` of the connection (or of
  the previous answer, so an idle keep-alive connection goes too). Once the headers are
  in, :class:`~appliance.tower.http.RequestGuard` bounds the body.

Refusals go to the caller's ``refuse`` (counted on the status bus, logged at a bounded
rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..peers import AddressCounts, peer_address

__all__ = ["ConnectionGate", "GateLimits", "GatedSite"]


@dataclass(frozen=True, slots=True)
class GateLimits:
    per_address: int = 16
    max_connections: int = 256
    handshakes_per_address: int = 8
    max_handshakes: int = 64
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0


class ConnectionGate:
    """The connection-level budget every tower TCP listener shares."""

    def __init__(self, refuse: Callable[[str, str], None],
                 limits: GateLimits | None = None) -> None:
        self.limits = limits or GateLimits()
        self._refuse = refuse
        self._open = AddressCounts()
        self._handshaking = AddressCounts()
        self._by_transport: dict[int, _GatedConnection] = {}

    @property
    def connections(self) -> int:
        return self._open.total

    def headers_in(self, transport: asyncio.BaseTransport | None) -> None:
        """A request's headers arrived on ``transport``: its deadline stops."""
        conn = self._by_transport.get(id(transport))
        if conn is not None:
            conn.disarm()

    def answered(self, transport: asyncio.BaseTransport | None) -> None:
        """A request was answered: the next one's headers have ``header_timeout``."""
        conn = self._by_transport.get(id(transport))
        if conn is not None:
            conn.arm(self.limits.header_timeout, "no request headers")


class GatedSite(web.BaseSite):
    """An aiohttp site whose connections pass a :class:`ConnectionGate` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, gate: ConnectionGate,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner)  # TLS is ours to start, not the loop's: no ssl_context
        self._host = host
        self._port = port
        self._gate = gate
        self._tls = ssl_context

    @property
    def name(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        assert factory is not None
        gate, tls = self._gate, self._tls
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GatedConnection(gate, factory, tls), self._host, self._port,
            reuse_address=True)


class _GatedConnection(asyncio.Protocol):
    """One accepted socket: admitted, TLS started, then every event passed to aiohttp's
    protocol (we stay in between to see the connection end and to keep the deadline)."""

    def __init__(self, gate: ConnectionGate, factory: Callable[[], Any],
                 tls: ssl.SSLContext | None) -> None:
        self._gate = gate
        self._factory = factory
        self._tls = tls
        self._address = ""
        self._counted = False
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        # Bytes that came with the end of the TLS handshake (TLS 1.3: the request can
        # follow the client's Finished at once), before start_tls returned to us.
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        gate, limits = self._gate, self._gate.limits
        self._address = peer_address(transport.get_extra_info("peername"))
        if not gate._open.acquire(self._address, limits.per_address, limits.max_connections):
            gate._refuse(self._address, "too many connections at once")
            transport.abort()
            return
        self._counted = True
        self._track(transport)
        self.arm(limits.header_timeout, "no request headers")
        if self._tls is None:
            self._hand_over(transport)
            return
        transport.pause_reading()  # the ClientHello is for start_tls, not for us
        if not gate._handshaking.acquire(self._address, limits.handshakes_per_address,
                                         limits.max_handshakes):
            gate._refuse(self._address, "too many TLS handshakes at once")
            self._close()
            return
        self._task = asyncio.ensure_future(self._start_tls(transport, self._tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        limits = self._gate.limits
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport, self, tls, server_side=True,
                ssl_handshake_timeout=limits.handshake_timeout)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            # TimeoutError (an OSError) is a handshake past its deadline: the slot goes.
            self._close()
            return
        finally:
            self._gate._handshaking.release(self._address)
        if secure is None or self._transport is None:  # closed meanwhile
            self._close()
            return
        self._track(secure)
        self._hand_over(secure)

    def _track(self, transport: asyncio.Transport) -> None:
        if self._transport is not None:
            self._gate._by_transport.pop(id(self._transport), None)
        self._transport = transport
        self._gate._by_transport[id(transport)] = self

    def _hand_over(self, transport: asyncio.Transport) -> None:
        inner = self._factory()
        self._inner = inner
        inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            inner.data_received(data)

    # --- the header deadline ---------------------------------------------------------------
    def arm(self, seconds: float, why: str) -> None:
        self.disarm()
        if self._transport is not None:
            self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire, why)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, why: str) -> None:
        self._deadline = None
        stage = "TLS handshake not finished" if self._inner is None and self._tls else why
        self._gate._refuse(self._address,
                           f"{stage} within {self._gate.limits.header_timeout:g} s")
        self._close()

    def _close(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()  # connection_lost follows (or _release if it never will)
        self._release()

    def _release(self) -> None:
        self.disarm()
        if self._transport is not None:
            self._gate._by_transport.pop(id(self._transport), None)
            self._transport = None
        if self._counted:
            self._counted = False
            self._gate._open.release(self._address)

    # --- passed through to aiohttp -----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._transport is not None and sum(map(len, self._early)) + len(data) <= 65536:
            self._early.append(data)
        else:  # more than any request's headers before the handshake ended: not a client
            self._close()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._inner is not None:
            inner, self._inner = self._inner, None
            with contextlib.suppress(Exception):  # aiohttp's own teardown
                inner.connection_lost(exc)
