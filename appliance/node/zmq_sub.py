"""Asyncio subscriber for bitcoind's ZMQ notifications (rawblock, rawtx, hashblock, sequence).

bitcoind publishes each notification as three frames: topic, body, and a 4-byte
little-endian sequence number counted per topic from 0 at bitcoind start. From those
numbers the subscriber tells consumers when their picture may be stale:

* ``gap > 0``: the sequence number jumped, so that many messages of this topic were
  lost (a queue overflowed at either end). A WARNING is logged.
* ``resync``: continuity is unknown. Set on the first message after the connection
  dropped and came back, or when the number went *backwards*, which means bitcoind
  restarted (its counters restart at 0). Not counted as a gap.

Either way the consumer re-reads the truth over RPC. ZMQ is a hint, never the source
of truth: a consumer subscribes first, then syncs over RPC, then follows notifications.

Hashes in bodies (``hashblock``, ``sequence``) are in *display order*, the byte order
RPC shows: ``body.hex()`` is the block hash as ``getbestblockhash`` prints it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..config import Config

__all__ = [
    "DEFAULT_HWM",
    "TOPICS",
    "Notification",
    "SequenceEvent",
    "SequenceLabel",
    "SubscriberStats",
    "ZMQSubscriber",
    "parse_sequence",
]

log = logging.getLogger(__name__)

TOPICS = ("rawblock", "rawtx", "hashblock", "sequence")

#: Receive queue length (ZMQ_RCVHWM, in messages) per topic, sized by memory on a
#: 4 GB Pi. rawblock: up to 4 MB each on mainnet, so 16 is <= 64 MB; a consumer that
#: falls further behind (catch-up after downtime) gets a gap and syncs over RPC
#: anyway. rawtx: typically 0.2-1 kB, 10 000 (~10 MB) rides out mempool bursts.
#: hashblock/sequence: <= 41-byte bodies, so long queues cost little.
DEFAULT_HWM: dict[str, int] = {
    "rawblock": 16,
    "rawtx": 10_000,
    "hashblock": 1_000,
    "sequence": 50_000,
}
_HWM_OTHER = 1_000

# Reconnect quickly after a bitcoind restart, then back off to one try per 5 s.
_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 5_000
# ZMTP heartbeats notice a silent dead peer (no FIN) that TCP would notice after hours.
_HEARTBEAT_IVL_MS = 10_000
_HEARTBEAT_TIMEOUT_MS = 30_000
# TCP keepalive for a bitcoind on another host (no effect on ipc:// or loopback).
_TCP_KEEPALIVE_IDLE_S = 60
_TCP_KEEPALIVE_INTVL_S = 10
_TCP_KEEPALIVE_CNT = 3

# Messages handled per socket per wake-up, so one busy topic cannot starve the others.
_BATCH = 64
_SEQ_MOD = 1 << 32  # bitcoind's per-topic counter is uint32 and wraps
_MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


@dataclass(frozen=True, slots=True)
class Notification:
    """One message from bitcoind.

    ``seq`` is bitcoind's per-topic sequence number; ``gap`` how many messages of this
    topic were missed just before this one; ``resync`` that continuity is unknown
    (reconnect or bitcoind restart). Resync on ``gap or resync``. On a reconnect after a
    drop a marker with an empty body and ``seq == -1`` comes at once (it carries no data).
    """

    topic: str
    body: bytes
    seq: int
    gap: int = 0
    resync: bool = False


class SequenceLabel(enum.StrEnum):
    """The event letter of a ``sequence`` notification."""

    BLOCK_CONNECTED = "C"
    BLOCK_DISCONNECTED = "D"
    TX_REMOVED = "R"  # from the mempool, not by a block (evicted, replaced, expired)
    TX_ADDED = "A"  # to the mempool


@dataclass(frozen=True, slots=True)
class SequenceEvent:
    """A parsed ``sequence`` body.

    ``hash_hex`` is the block hash (C/D) or txid (A/R) in display order, as RPC shows
    it. ``mempool_seq`` is bitcoind's mempool sequence for A/R (compare with
    ``getrawmempool false true``), None for blocks.
    """

    hash_hex: str
    label: SequenceLabel
    mempool_seq: int | None = None


def parse_sequence(body: bytes) -> SequenceEvent:
    """Parse a ``sequence`` body: 32-byte hash, label, and for A/R an 8-byte LE number."""
    if len(body) < 33:
        raise ValueError(f"sequence body too short ({len(body)} bytes)")
    try:
        label = SequenceLabel(chr(body[32]))
    except ValueError:
        raise ValueError(f"unknown sequence label {body[32:33]!r}") from None
    is_tx = label in (SequenceLabel.TX_ADDED, SequenceLabel.TX_REMOVED)
    if len(body) != (41 if is_tx else 33):
        raise ValueError(f"sequence body for {label.value!r} has {len(body)} bytes")
    mempool_seq = int.from_bytes(body[33:41], "little") if is_tx else None
    return SequenceEvent(body[:32].hex(), label, mempool_seq)


@dataclass
class SubscriberStats:
    """Counters since the subscriber was created (for logs and health checks)."""

    received: dict[str, int] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)  # sum of gaps per topic
    restarts: int = 0  # sequence numbers went backwards: bitcoind restarted
    disconnects: int = 0
    malformed: int = 0


def _by_endpoint(endpoints: Mapping[str, str]) -> dict[str, list[str]]:
    """endpoint -> its topics (topics sharing an endpoint share a socket)."""
    if not endpoints:
        raise ValueError("no ZMQ topics to subscribe to")
    by_endpoint: dict[str, list[str]] = {}
    for topic, endpoint in endpoints.items():
        if not topic or not endpoint:
            raise ValueError(f"empty ZMQ topic or endpoint: {topic!r} -> {endpoint!r}")
        by_endpoint.setdefault(endpoint, []).append(topic)
    return by_endpoint


def _close_all(ctx: zmq.Context[Any], sockets: Iterable[zmq.Socket[Any]],
               monitors: Iterable[zmq.Socket[Any]]) -> None:
    """Stop the monitors, close every socket, end the context."""
    sockets = list(sockets)
    for sock in sockets:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:  # already stopped
            pass
    for monitor in monitors:
        monitor.close(linger=0)
    for sock in sockets:
        sock.close(linger=0)
    ctx.term()


def _readable(sock: zmq.asyncio.Socket) -> bool:
    # get(), not getsockopt(): only the asyncio override re-arms its edge-triggered fd.
    events = sock.get(zmq.EVENTS)
    return isinstance(events, int) and bool(events & zmq.POLLIN)


@dataclass
class _TopicState:
    last: int | None = None
    reconnected: bool = False  # the connection dropped since ``last``


class ZMQSubscriber:
    """Subscribes to ``{topic: endpoint}``; iterate with ``async for n in sub``.

    Topics that share an endpoint share one socket. Sockets connect at construction,
    so create the subscriber *before* syncing over RPC. ``hwm`` overrides
    :data:`DEFAULT_HWM` per topic. Call :meth:`close` when done (or use
    ``async with``); closing ends a pending ``async for``.
    """

    def __init__(self, endpoints: Mapping[str, str], *, hwm: Mapping[str, int] | None = None
                 ) -> None:
        plan = self._init_state(endpoints, hwm)
        # Own context, not Context.instance(): no process-wide state, and close() can
        # terminate it knowing no one else uses it.
        self._ctx = zmq.asyncio.Context()
        self._sockets: list[tuple[zmq.asyncio.Socket, str, frozenset[str]]] = []
        self._monitors: dict[zmq.asyncio.Socket, tuple[str, frozenset[str]]] = {}
        self._poller = zmq.asyncio.Poller()
        try:
            for endpoint, (topics, queue) in plan.items():
                sock = self._open(endpoint, topics, queue)
                self._sockets.append((sock, endpoint, frozenset(topics)))
                self._poller.register(sock, zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    def _init_state(self, endpoints: Mapping[str, str], hwm: Mapping[str, int] | None
                    ) -> dict[str, tuple[list[str], int]]:
        """Counters and per-topic state; returns endpoint -> (its topics, queue length)."""
        self.stats = SubscriberStats()
        self._state = {topic: _TopicState() for topic in endpoints}
        self._pending: deque[Notification] = deque()
        self._closed = False
        limits = {**DEFAULT_HWM, **(hwm or {})}
        # The smallest queue wins on a shared socket: memory is the hard limit.
        return {endpoint: (topics, min(limits.get(t, _HWM_OTHER) for t in topics))
                for endpoint, topics in _by_endpoint(endpoints).items()}

    @classmethod
    def from_config(cls, cfg: Config, topics: Iterable[str] = TOPICS, *,
                    hwm: Mapping[str, int] | None = None) -> ZMQSubscriber:
        """Subscribe to ``topics`` at the endpoints named by ``cfg.node.zmq_*``."""
        return cls({t: str(getattr(cfg.node, f"zmq_{t}")) for t in topics}, hwm=hwm)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoints(self) -> dict[str, tuple[str, ...]]:
        """endpoint -> topics received on it (one socket each)."""
        return {ep: tuple(sorted(topics)) for _, ep, topics in self._sockets}

    def _open(self, endpoint: str, topics: list[str], queue: int) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(zmq.SUB)
        monitor = self._connect(sock, endpoint, topics, queue)
        self._monitors[monitor] = (endpoint, frozenset(topics))
        self._poller.register(monitor, zmq.POLLIN)
        return sock

    @classmethod
    def _connect(cls, sock: zmq.Socket[Any], endpoint: str, topics: Iterable[str],
                 queue: int) -> Any:
        """Configure and connect ``sock``; returns its monitor socket (closes ``sock`` if
        any step fails)."""
        try:
            cls._configure(sock, topics, queue)
            # The monitor reports disconnects: bitcoind stopped or is restarting.
            monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
            monitor.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return monitor

    @staticmethod
    def _configure(sock: zmq.Socket[Any], topics: Iterable[str], queue: int) -> None:
        """Queue length, reconnects, heartbeats, keepalive and subscriptions."""
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, queue)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.HEARTBEAT_IVL, _HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, _TCP_KEEPALIVE_IDLE_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, _TCP_KEEPALIVE_INTVL_S)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, _TCP_KEEPALIVE_CNT)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    # --- iteration -------------------------------------------------------------------
    def __aiter__(self) -> ZMQSubscriber:
        return self

    async def __anext__(self) -> Notification:
        note = await self.next()
        if note is None:
            raise StopAsyncIteration
        return note

    async def next(self, timeout: float | None = None) -> Notification | None:
        """The next notification; None when closed, or when nothing came for ``timeout``
        seconds (a consumer's cue to check on bitcoind over RPC)."""
        timeout_ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                return None
            try:
                ready = dict(await self._poller.poll(timeout_ms))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # close() from another task cancels the poll: that is end of stream.
                if self._closed and (task is None or not task.cancelling()):
                    return None
                raise
            except zmq.ZMQError:
                if self._closed:
                    return None
                raise
            if not ready and timeout_ms is not None:
                return None  # quiet for ``timeout``
            # Monitors first: a disconnect must be known before the data that follows it.
            for monitor, (endpoint, topics) in self._monitors.items():
                if monitor in ready:
                    await self._read_monitor(monitor, endpoint, topics)
            for sock, _endpoint, topics in self._sockets:
                if sock in ready:
                    await self._read_data(sock, topics)

    async def _read_monitor(self, monitor: zmq.asyncio.Socket, endpoint: str,
                            topics: frozenset[str]) -> None:
        while _readable(monitor):
            note = self._monitor_event(parse_monitor_message(await monitor.recv_multipart()),
                                       endpoint, topics)
            if note is not None:
                self._pending.append(note)

    def _monitor_event(self, event: Mapping[str, object], endpoint: str,
                       topics: frozenset[str]) -> Notification | None:
        """Track a connect/disconnect; a resync marker when back after a drop."""
        if event["event"] == zmq.EVENT_DISCONNECTED:
            self.stats.disconnects += 1
            log.warning("zmq %s: disconnected from bitcoind (stopped or restarting?)",
                        endpoint)
            for topic in topics:
                self._state[topic].reconnected = True
        elif event["event"] == zmq.EVENT_CONNECTED:
            log.info("zmq %s: connected", endpoint)
            if any(self._state[t].reconnected for t in topics):
                # Back after a drop. Whatever bitcoind published before this
                # reconnect is lost, and it may publish nothing more for a while
                # (no new block): tell the consumer now instead of at the next
                # message. Empty body, seq -1: a resync marker, not data.
                return Notification(min(topics), b"", -1, resync=True)
        return None

    async def _read_data(self, sock: zmq.asyncio.Socket, topics: frozenset[str]) -> None:
        for _ in range(_BATCH):
            if not _readable(sock):
                return
            note = self._notification(await sock.recv_multipart(), topics)
            if note is not None:
                self._pending.append(note)

    def _notification(self, frames: list[bytes], topics: frozenset[str]
                      ) -> Notification | None:
        """One message's frames as a notification (sequence tracked), or None."""
        if len(frames) != 3 or len(frames[2]) != 4:
            self.stats.malformed += 1
            log.warning("zmq: ignoring malformed message (%d frames)", len(frames))
            return None
        topic = frames[0].decode(errors="replace")
        if topic not in topics:
            return None  # a prefix match of a topic we did not ask for
        seq = int.from_bytes(frames[2], "little")
        gap, resync = self._track(topic, seq)
        self.stats.received[topic] = self.stats.received.get(topic, 0) + 1
        return Notification(topic, bytes(frames[1]), seq, gap, resync)

    def _track(self, topic: str, seq: int) -> tuple[int, bool]:
        """Update ``topic``'s sequence state; returns (gap, resync)."""
        state = self._state[topic]
        last, reconnected = state.last, state.reconnected
        state.last, state.reconnected = seq, False
        if last is None:
            return 0, False  # first message: nothing to be continuous with
        jump = (seq - last - 1) % _SEQ_MOD
        if jump >= _SEQ_MOD // 2:
            # Backwards: bitcoind restarted and counts from 0 again. Not a loss we can
            # count, so no gap; the consumer must resync all the same.
            self.stats.restarts += 1
            log.warning("zmq %s: bitcoind restarted (seq %d -> %d): resync", topic, last, seq)
            return 0, True
        if reconnected:
            # Messages may have been lost while disconnected, possibly from a restarted
            # publisher, so the jump is not a trustworthy count: resync, no gap.
            log.info("zmq %s: reconnected (seq %d -> %d): resync", topic, last, seq)
            return 0, True
        if jump:
            self.stats.missed[topic] = self.stats.missed.get(topic, 0) + jump
            log.warning("zmq %s: missed %d messages (seq %d -> %d): resync needed",
                        topic, jump, last, seq)
        return jump, False

    # --- shutdown --------------------------------------------------------------------
    def close(self) -> None:
        """Close every socket and the context; idempotent; ends pending iteration."""
        if self._closed:
            return
        self._closed = True
        _close_all(self._ctx, [s for s, _e, _t in self._sockets], self._monitors)

    async def __aenter__(self) -> ZMQSubscriber:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
