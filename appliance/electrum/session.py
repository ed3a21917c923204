"""One Electrum client connection, independent of how its bytes travel.

A listener decodes whatever framing it uses (a line over TCP/TLS, one Noise message) and
calls :meth:`ElectrumSession.handle_message` with each message; the session answers
through a :class:`MessageTransport`. It owns the per-connection state: the negotiated
version and method table, subscriptions (scripthash -> last status sent), the cost
counter that throttles and then drops flooding clients, and the in-flight limit.

Ordering guarantees a wallet relies on:

* ``server.version`` is served before anything else is read, so no request runs under
  the wrong version; anything else first is refused and the connection closed (1.6).
  It must come within ``version_timeout`` of connecting: until then a connection is
  nobody, and it holds its slot for no longer than that.
* A scripthash is registered before its status is computed; a change that lands while
  the answer is being computed is folded into the answer or sent after it, never before.
* Notifications that fire while a batch is being served are held until the batch's
  response has been sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .admission import Ticket
from .backend import BackendError, ElectrumBackend
from .errors import (
    EXCESSIVE_RESOURCE_USAGE,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    SERVER_BUSY,
    RPCError,
)
from .framing import DEFAULT_MAX_LINE
from .handlers import PROTOCOL_MIN, Method, ServerInfo
from .jsonrpc import (
    Batch,
    Invalid,
    Message,
    Notification,
    Request,
    encode,
    error_response,
    notification,
    parse_message,
    response,
)

__all__ = [
    "ElectrumSession",
    "MessageTransport",
    "ServerCounters",
    "SessionHost",
    "SessionLimits",
]

log = logging.getLogger(__name__)

_MISSING: Any = object()
_PROTOCOL_ERROR_COST = 5.0  # unparseable or invalid messages cost more than a ping
#: Wallets call the methods they know a server has; a batch of 2,000 unknown methods
#: (junk) reaches the hard cost limit in one go (cost_hard_limit / 2,000).
_UNKNOWN_METHOD_COST = 25.0
_BATCH_YIELD_EVERY = 64  # items served between turns for other clients


class MessageTransport(Protocol):
    """Where a session's encoded messages go (TCP/TLS stream, Noise channel)."""

    def send_line(self, line: bytes) -> None:
        """Queue one JSON message; the transport adds its framing (``\\n``, a Noise frame)."""

    def close(self) -> None:
        """Flush what is queued, then close. Idempotent."""

    async def drain(self) -> None:
        """Wait until the send buffer is low (backpressure); never raises."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-connection limits. Costs are in units of roughly one index lookup."""

    max_line: int = DEFAULT_MAX_LINE
    #: Electrum subscribes to every address of every wallet it has open.
    max_subscriptions: int = 20_000
    #: New scripts no wallet owns that one connection may make the box watch (Electrum's
    #: Lightning subscribes to a few per channel; see docs/threat-model.md).
    max_adhoc_watches: int = 100
    max_in_flight: int = 16
    max_batch: int = 5_000
    max_response: int = 32_000_000
    #: A client that lets this much unsent data pile up is dropped (transport's job).
    max_send_buffer: int = 16_000_000
    request_timeout: float = 60.0
    #: The spec lets servers drop clients silent for ~10 minutes (they send server.ping).
    #: Only requests count: blank lines and unfinished lines keep nobody alive.
    idle_timeout: float = 600.0
    #: ``server.version`` must arrive this soon after connecting (wallets send it first).
    version_timeout: float = 10.0
    #: Once a line has begun it must end within this (a byte a second holds nothing).
    line_timeout: float = 30.0
    #: Above the soft limit each message waits up to ``throttle_max_delay`` seconds,
    #: growing towards the hard limit; above the hard limit the client is disconnected.
    cost_soft_limit: float = 5_000.0
    cost_hard_limit: float = 50_000.0
    cost_decay_per_sec: float = 250.0
    throttle_max_delay: float = 1.0


@dataclass
class ServerCounters:
    """Totals since start, for status displays and logs."""

    sessions_total: int = 0
    sessions_refused: int = 0
    requests: int = 0
    errors: int = 0
    #: Queries for scripts no registered wallet owns (answered as unused, never refused).
    unknown_script_queries: int = 0
    #: Unknown scripts a session asked to watch but its ``max_adhoc_watches`` was spent.
    adhoc_refused: int = 0
    notifications: int = 0
    #: Requests refused unread or unparsed: too costly (values, depth, bytes in flight),
    #: oversize lines, lines that never ended, excessive resource usage.
    requests_refused: int = 0
    #: Connections closed for not sending ``server.version`` in time.
    version_timeouts: int = 0


class SessionHost(Protocol):
    """What a session needs from the server around it (``SessionManager``)."""

    @property
    def backend(self) -> ElectrumBackend: ...

    @property
    def info(self) -> ServerInfo: ...

    @property
    def limits(self) -> SessionLimits: ...

    @property
    def counters(self) -> ServerCounters: ...

    def handlers(self, version: tuple[int, ...]) -> Mapping[str, Method]: ...

    def watch(self, session: ElectrumSession, scripthash: bytes) -> None: ...

    def unwatch(self, session: ElectrumSession, scripthash: bytes) -> None: ...

    def detach(self, session: ElectrumSession) -> None: ...

    def log_refusal(self, msg: str, *args: object) -> None:
        """Log a refused request or connection (rate-limited: a flood repeats them)."""

    def penalize(self, session: ElectrumSession) -> None:
        """The client abused its share: refuse its address for a while."""


def _echo(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."


def _declared_v2(msg: Message) -> bool | None:
    """Whether the client speaks strict JSON-RPC 2.0; None while it is unclear."""
    items: Iterable[Any] = msg.items if isinstance(msg, Batch) else (msg,)
    for item in items:
        if isinstance(item, Request | Notification):
            return item.v2
    return None


class ElectrumSession:
    """Implements :class:`~appliance.electrum.handlers.HandlerContext` for the handlers."""

    def __init__(self, host: SessionHost, transport: MessageTransport, *,
                 name: str = "", ticket: Ticket | None = None) -> None:
        self._host = host
        self._transport = transport
        self._limits = host.limits
        self.name = name
        #: this connection's share (slot, bytes in flight); the manager closes it
        self.ticket = ticket
        self.client_name = ""
        self._protocol: tuple[int, ...] | None = None
        self._table: Mapping[str, Method] = {}
        self._require_v2: bool | None = None
        self.headers_subscribed = False
        self._last_tip: tuple[int, bytes] | None = None
        self._subs: dict[bytes, str | None] = {}  # scripthash -> last status sent
        self._pending: dict[bytes, int] = {}  # scripthash -> subscribe calls running
        self._latest: dict[bytes, str | None] = {}  # status changes seen while pending
        self._adhoc_watches = 0  # new watches of unknown scripts this session caused
        self._cost = 0.0
        self._cost_at = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self._limits.max_in_flight)
        self._hold = 0  # batches being served: notifications wait for their response
        self._held: list[bytes] = []
        self._disconnect = False
        self.closed = False
        self.last_activity = self.opened_at = time.monotonic()
        # Paired clients are known by their key (and may use only hearth.* methods);
        # the deadline is for connections that are nobody until they say who they are.
        self._version_timer: asyncio.TimerHandle | None = None
        if ticket is None or not ticket.paired:
            self._version_timer = asyncio.get_running_loop().call_later(
                self._limits.version_timeout, self._version_deadline)

    # --- HandlerContext --------------------------------------------------------------

    @property
    def backend(self) -> ElectrumBackend:
        return self._host.backend

    @property
    def info(self) -> ServerInfo:
        return self._host.info

    @property
    def protocol(self) -> tuple[int, ...] | None:
        return self._protocol

    def bump_cost(self, cost: float) -> None:
        self._cost = self.cost + cost
        self._cost_at = time.monotonic()

    def set_protocol(self, client_name: str, version: tuple[int, ...]) -> None:
        if self._version_timer is not None:
            self._version_timer.cancel()
        self.client_name = client_name
        self._protocol = version
        self._table = self._host.handlers(version)

    async def query_script(self, scripthash: bytes) -> bool:
        backend = self._host.backend
        await backend.script_queried(scripthash)
        if backend.is_watched(scripthash):
            return True
        self._host.counters.unknown_script_queries += 1
        return False

    def subscribe_headers(self, height: int, header: bytes) -> None:
        self.headers_subscribed = True
        self._last_tip = (height, header)

    def begin_subscription(self, scripthash: bytes) -> None:
        if scripthash not in self._subs and scripthash not in self._pending:
            if self.subscription_count >= self._limits.max_subscriptions:
                raise RPCError.bad_request(
                    f"subscription limit of {self._limits.max_subscriptions:,d} reached")
            self._host.watch(self, scripthash)
        self._pending[scripthash] = self._pending.get(scripthash, 0) + 1

    def end_subscription(self, scripthash: bytes, status: str | None) -> str | None:
        left = self._pending.pop(scripthash) - 1
        if left:
            self._pending[scripthash] = left
            status = self._latest.get(scripthash, status)
        else:
            status = self._latest.pop(scripthash, status)
        self._subs[scripthash] = status
        return status

    def abort_subscription(self, scripthash: bytes) -> None:
        left = self._pending.pop(scripthash) - 1
        if left:
            self._pending[scripthash] = left
            return
        latest = self._latest.pop(scripthash, _MISSING)
        if scripthash not in self._subs:
            self._host.unwatch(self, scripthash)
        elif latest is not _MISSING:
            self._notify_status(scripthash, latest)

    def watch_unknown(self, scripthash: bytes) -> None:
        if self._adhoc_watches >= self._limits.max_adhoc_watches:
            self._host.counters.adhoc_refused += 1
            return
        if self._host.backend.watch_script(scripthash):
            self._adhoc_watches += 1

    def unsubscribe(self, scripthash: bytes) -> bool:
        was = self._subs.pop(scripthash, _MISSING) is not _MISSING
        if scripthash not in self._pending:
            self._host.unwatch(self, scripthash)
        return was

    # --- state the manager reads -----------------------------------------------------

    @property
    def cost(self) -> float:
        """Accumulated cost after decay."""
        elapsed = time.monotonic() - self._cost_at
        return max(0.0, self._cost - elapsed * self._limits.cost_decay_per_sec)

    @property
    def subscription_count(self) -> int:
        return len(self._subs) + sum(1 for sh in self._pending if sh not in self._subs)

    def scripthashes(self) -> set[bytes]:
        """Every scripthash this session is (or is becoming) subscribed to."""
        return set(self._subs) | set(self._pending)

    def subscribed_status(self, scripthash: bytes) -> str | None:
        """Last status sent for a subscribed scripthash (KeyError if not subscribed)."""
        return self._subs[scripthash]

    # --- notifications (called by the manager) -------------------------------------------

    def notify_tip(self, height: int, header: bytes, line: bytes) -> None:
        """``line`` is the encoded notification, built once for all sessions."""
        if self.closed or not self.headers_subscribed or self._last_tip == (height, header):
            return
        self._last_tip = (height, header)
        self._send_notification(line)

    def notify_status(self, scripthash: bytes, status: str | None, line: bytes) -> None:
        if self.closed:
            return
        if scripthash in self._pending:
            self._latest[scripthash] = status  # the pending answer will carry it
            return
        if scripthash not in self._subs or self._subs[scripthash] == status:
            return
        self._subs[scripthash] = status
        self._send_notification(line)

    def _notify_status(self, scripthash: bytes, status: str | None) -> None:
        if self._subs.get(scripthash, _MISSING) != status:
            self._subs[scripthash] = status
            self._send_notification(encode(notification(
                "blockchain.scripthash.subscribe", [scripthash.hex(), status])))

    def _send_notification(self, line: bytes) -> None:
        self._host.counters.notifications += 1
        if self._hold:
            self._held.append(line)
        else:
            self._send(line)

    # --- receiving ---------------------------------------------------------------------

    async def handle_message(self, message: bytes) -> None:
        """Serve one received message. Never raises (except on cancellation).

        Returns once the message is being served; waits first while the client is
        throttled or has ``max_in_flight`` requests running, which stops the listener
        reading and so pushes back on the client. The ``len(message)`` bytes the
        listener charged to the ticket are released once the message is answered.
        """
        size = len(message)
        try:
            if self.closed:
                return
            self.bump_cost(0.05 + size / 10_000)
            if not await self._throttle():
                return
            if not message.strip():
                return  # a blank line (e.g. "\r\n" from a terminal) is no message
            self.last_activity = time.monotonic()
            negotiated = self._protocol is not None
            if negotiated:
                # A slot first, then parse: at most max_in_flight parsed messages per
                # session; the rest wait as bytes, charged to the client's address.
                await self._slots.acquire()
                if self.closed:
                    self._slots.release()
                    return
            msg = self._parse(message)
            del message  # the parsed form is all that is kept
            if msg is None or not negotiated:
                if msg is not None:  # nothing else runs until version negotiation is over
                    await self._serve(msg)
                if negotiated:
                    self._slots.release()
                return
            task = asyncio.create_task(self._serve_in_slot(msg, size))
            size = 0  # the task releases it
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        finally:
            self._release(size)

    def _parse(self, message: bytes) -> Message | None:
        """The message, or None when it was refused unparsed (and the client with it)."""
        msg = parse_message(message, require_v2=bool(self._require_v2))
        if isinstance(msg, Invalid) and msg.error.code == EXCESSIVE_RESOURCE_USAGE:
            self.refuse(msg.error)  # no wallet sends such a thing
            return None
        if self._require_v2 is None:
            self._require_v2 = _declared_v2(msg)
        return msg

    def _release(self, size: int) -> None:
        if self.ticket is not None and size:
            self.ticket.release(size)

    def _version_deadline(self) -> None:
        if self._protocol is None and not self.closed:
            self._host.counters.version_timeouts += 1
            self._host.log_refusal("%s: no server.version within %g s, closing",
                                   self.name, self._limits.version_timeout)
            self._fatal(RPCError.bad_request("use server.version to identify client"))

    def refuse(self, error: RPCError) -> None:
        """Refuse what the client sent (too large, too slow, too costly): answer, close,
        and tell the host, which keeps the client's address out for a while."""
        if self.closed:
            return
        self._host.counters.requests_refused += 1
        self._host.log_refusal("%s: %s", self.name, error.message)
        self._fatal(error)
        self._host.penalize(self)

    async def message_too_large(self, max_size: int) -> None:
        """The listener's framer met an oversize message: finish the requests before it,
        answer with an error, then disconnect."""
        running = [t for t in self._tasks if t is not asyncio.current_task()]
        if running:
            await asyncio.wait(running)
        self.refuse(RPCError.invalid_request(f"message over {max_size:,d} bytes"))

    async def _throttle(self) -> bool:
        """Slow a costly client down; False (and disconnected) past the hard limit."""
        limits = self._limits
        cost = self.cost
        if cost > limits.cost_hard_limit:
            self.refuse(RPCError(EXCESSIVE_RESOURCE_USAGE, "excessive resource usage"))
            return False
        if cost > limits.cost_soft_limit:
            span = max(limits.cost_hard_limit - limits.cost_soft_limit, 1e-9)
            await asyncio.sleep(limits.throttle_max_delay
                                * min(1.0, (cost - limits.cost_soft_limit) / span))
        return not self.closed

    async def _serve_in_slot(self, msg: Message, size: int) -> None:
        try:
            await self._serve(msg)
        except Exception:  # a bug, not a client error: drop only this connection
            log.exception("%s: unexpected error", self.name)
            self.close()
        finally:
            self._slots.release()
            self._release(size)

    async def _serve(self, msg: Message) -> None:
        if isinstance(msg, Batch):
            await self._serve_batch(msg)
        else:
            answer = await self._answer(msg)
            if answer is not None:
                self._send(self._encode_response(answer))
        if self._disconnect:
            self.close()
        else:
            await self._drain()

    async def _serve_batch(self, batch: Batch) -> None:
        if len(batch.items) > self._limits.max_batch:
            self.bump_cost(_PROTOCOL_ERROR_COST)
            self._send(self._encode_response(self._error(None, RPCError.invalid_request(
                f"batch of {len(batch.items):,d} exceeds {self._limits.max_batch:,d}"))))
            return
        if self.cost + self._junk_cost(batch) > self._limits.cost_hard_limit:
            # Known before serving any of it: this batch alone would cross the limit.
            self.refuse(RPCError(EXCESSIVE_RESOURCE_USAGE, "excessive resource usage"))
            return
        fatal: RPCError | None = None
        self._hold += 1
        try:
            parts: list[bytes] = []
            for n, item in enumerate(batch.items):
                if self.closed:
                    return
                if n and not n % _BATCH_YIELD_EVERY:
                    await asyncio.sleep(0)  # let other clients in between
                answer = await self._answer(item)
                if answer is not None:
                    parts.append(self._encode_response(answer))
                if self._disconnect:
                    break
                if self.cost > self._limits.cost_hard_limit:
                    fatal = RPCError(EXCESSIVE_RESOURCE_USAGE, "excessive resource usage")
                    break
            if parts:
                # JSON-RPC: one array answering every request of the batch, on one line.
                self._send(b"[" + b",".join(parts) + b"]")
        finally:
            self._hold -= 1
            if not self._hold and self._held:
                held, self._held = self._held, []
                for line in held:
                    self._send(line)
        if fatal is not None:
            self.refuse(fatal)

    def _junk_cost(self, batch: Batch) -> float:
        """What the batch's invalid items and unknown methods will cost (a dict lookup
        each), so a junk batch is refused before any of it is served."""
        table = self._table if self._protocol else self._host.handlers(PROTOCOL_MIN)
        cost = 0.0
        for item in batch.items:
            if isinstance(item, Invalid):
                cost += _PROTOCOL_ERROR_COST
            elif isinstance(item, Request) and item.method not in table:
                cost += _UNKNOWN_METHOD_COST
        return cost

    async def _answer(self, item: Request | Notification | Invalid) -> dict[str, Any] | None:
        """The response to one request (None for a notification)."""
        if isinstance(item, Invalid):
            self.bump_cost(_PROTOCOL_ERROR_COST)
            return self._error(item.id, item.error)
        self._host.counters.requests += 1
        if self._protocol is None and item.method != "server.version":
            # Protocol 1.6 (and ElectrumX for every version): server.version comes first.
            self._disconnect = True
            if isinstance(item, Notification):
                return None
            return self._error(item.id, RPCError.bad_request(
                "use server.version to identify client"))
        if isinstance(item, Notification):
            return None  # the protocol defines no client-to-server notifications
        table = self._table if self._protocol else self._host.handlers(PROTOCOL_MIN)
        method = table.get(item.method)
        if method is None:
            self.bump_cost(_UNKNOWN_METHOD_COST)
            return self._error(item.id, RPCError(
                METHOD_NOT_FOUND, f"unknown method {_echo(item.method)}"))
        try:
            args, kwargs = method.bind(item.params)
            async with asyncio.timeout(self._limits.request_timeout):
                result = await method.func(self, *args, **kwargs)
        except RPCError as exc:
            return self._error(item.id, exc)
        except BackendError as exc:
            return self._error(item.id, RPCError(exc.code, exc.message))
        except TimeoutError:
            return self._error(item.id, RPCError(SERVER_BUSY, "request timed out"))
        except Exception:
            log.exception("%s: %s failed", self.name, item.method)
            return self._error(item.id, RPCError(INTERNAL_ERROR, "internal error"))
        return response(item.id, result)

    def _error(self, msg_id: Any, error: RPCError) -> dict[str, Any]:
        self._host.counters.errors += 1
        if error.disconnect:
            self._disconnect = True
        return error_response(msg_id, error)

    # --- sending -------------------------------------------------------------------

    def _encode_response(self, answer: dict[str, Any]) -> bytes:
        try:
            line = encode(answer)
        except RPCError as exc:
            log.error("%s: unencodable result: %r", self.name, answer.get("result"))
            return encode(self._error(answer["id"], exc))
        if len(line) > self._limits.max_response:
            return encode(self._error(answer["id"], RPCError(
                EXCESSIVE_RESOURCE_USAGE,
                f"response too large (over {self._limits.max_response:,d} bytes)")))
        return line

    def _send(self, line: bytes) -> None:
        if not self.closed:
            self._transport.send_line(line)

    async def _drain(self) -> None:
        if not self.closed:
            await self._transport.drain()

    def _fatal(self, error: RPCError) -> None:
        self._send(encode(self._error(None, error)))
        self.close()

    # --- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving, drop subscriptions, close the transport. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._version_timer is not None:
            self._version_timer.cancel()
        try:
            current = asyncio.current_task()
        except RuntimeError:
            current = None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._host.detach(self)
        self._transport.close()

    async def wait_closed(self) -> None:
        """Wait for the requests that were running to finish cancelling."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
