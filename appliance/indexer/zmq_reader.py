"""bitcoind's ZMQ notifications read by a thread of their own, handed over in batches.

A mempool burst arrives as two messages per transaction (``rawtx``, ``sequence``),
one by one as bitcoind accepts them. Read through pyzmq's asyncio integration, each
message cost a poll, a future and an event-loop wake-up: ~70% of the indexer's CPU
per mempool transaction (py-spy, docs/performance.md). Here one thread does the
blocking receives (the GIL is released while it waits), frames each message and
tracks its sequence number exactly as :class:`~appliance.node.ZMQSubscriber` does,
then hands the event loop whatever queued meanwhile in one call (messages that come
while that call waits for its turn join it): one wake-up per batch, not per message.
The consumer side (``next``) is the same.

A burst as bitcoind accepts it (~100 transactions a second here) still came one message
per wake-up: each message cost a wake-up of this thread and one of the loop, ~0.2 ms
of CPU apiece on this VM, more than everything done with the transaction. So while
messages keep coming (a hand-off within ``_BURST_S`` of the last) the thread waits
``_LINGER_S`` before reading again and hands over what queued meanwhile: CPU per
transaction of a 5,000-transaction burst 0.45 -> 0.29 ms. A lone notification (a
payment, a block after a quiet spell) goes over at once; one in a burst waits at most
``_LINGER_S``.

Only the thread touches the sockets (pyzmq sockets are not thread-safe); it closes
them itself when told to stop. While the loop has ``_MAX_QUEUED`` notifications
unread, the thread stops reading, so bitcoind's queue (the HWM) fills and overflows
into a gap as before, instead of this process's memory growing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..node import ZMQSubscriber
from ..node.zmq_sub import Notification, _close_all

__all__ = ["ThreadedSubscriber"]

log = logging.getLogger("indexer.zmq")

_MAX_QUEUED = 20_000  # notifications handed over and not yet read by the loop
_POLL_MS = 100  # how soon the thread notices close()
# In a burst (a hand-off less than _BURST_S after the last), the thread waits _LINGER_S
# before reading again, so what arrives meanwhile goes over in one hand-off.
_BURST_S = 0.05
_LINGER_S = 0.02


class ThreadedSubscriber(ZMQSubscriber):
    """A :class:`ZMQSubscriber` whose sockets are read by a thread (see module doc).

    Construct it inside the running event loop (batches are delivered to it)."""

    def __init__(self, endpoints: Mapping[str, str], *, hwm: Mapping[str, int] | None = None
                 ) -> None:
        # Not the parent's __init__: its sockets are asyncio ones. The parent's
        # sequence tracking (``_track``) and accessors work on the same fields.
        plan = self._init_state(endpoints, hwm)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None  # a reader waiting in next()
        # Filled by the thread, emptied into ``_pending`` by one loop callback; while
        # that callback is scheduled, more messages join it (no extra wake-up).
        self._inbox: list[Notification] = []
        self._scheduled = False
        self._lock = threading.Lock()
        self._sync_ctx = zmq.Context()
        self._data: list[tuple[zmq.Socket[bytes], str, frozenset[str]]] = []
        self._monitor_socks: dict[zmq.Socket[bytes], tuple[str, frozenset[str]]] = {}
        try:
            for endpoint, (topics, queue) in plan.items():
                self._data.append((self._open_sync(endpoint, topics, queue), endpoint,
                                   frozenset(topics)))
        except BaseException:
            self._close_sockets()
            raise
        self._thread = threading.Thread(target=self._run, name="zmq-reader", daemon=True)
        self._thread.start()

    @property
    def endpoints(self) -> dict[str, tuple[str, ...]]:
        return {ep: tuple(sorted(topics)) for _, ep, topics in self._data}

    def _open_sync(self, endpoint: str, topics: list[str], queue: int) -> zmq.Socket[bytes]:
        sock = self._sync_ctx.socket(zmq.SUB)
        monitor: zmq.Socket[bytes] = self._connect(sock, endpoint, topics, queue)
        self._monitor_socks[monitor] = (endpoint, frozenset(topics))
        return sock

    # --- the consumer (event loop) side ---------------------------------------------------
    async def next(self, timeout: float | None = None) -> Notification | None:
        while True:
            if self._closed:  # as the parent: nothing once closed, queued or not (the
                return None   # owner that closed it, or the service ending, resyncs)
            if self._pending:
                return self._pending.popleft()
            # A bare future, not wait_for(): no task per wait (one wait per message in
            # a trickle of mempool transactions).
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None

    def _drain(self) -> None:
        with self._lock:
            batch, self._inbox, self._scheduled = self._inbox, [], False
        self._pending.extend(batch)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the reader thread ----------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        for monitor in self._monitor_socks:
            poller.register(monitor, zmq.POLLIN)
        for sock, _endpoint, _topics in self._data:
            poller.register(sock, zmq.POLLIN)
        last = 0.0
        try:
            while not self._closed:
                if len(self._pending) + len(self._inbox) >= _MAX_QUEUED:
                    time.sleep(0.01)  # let the loop catch up; ZMQ queues meanwhile
                    continue
                ready = dict(poller.poll(_POLL_MS))
                if not ready:
                    continue
                batch: list[Notification] = []
                # Monitors first: a disconnect must be known before the data after it.
                for monitor, (endpoint, topics) in self._monitor_socks.items():
                    if monitor in ready:
                        self._monitor_events(monitor, endpoint, topics, batch)
                for sock, _endpoint, topics in self._data:
                    if sock in ready:
                        self._data_messages(sock, topics, batch)
                if batch:
                    with self._lock:
                        self._inbox += batch
                        wake, self._scheduled = not self._scheduled, True
                    if wake:
                        try:
                            self._loop.call_soon_threadsafe(self._drain)
                        except RuntimeError:  # the loop is closed: nobody is reading
                            return
                    now = time.monotonic()
                    if now - last < _BURST_S:
                        time.sleep(_LINGER_S)
                    last = now
        except Exception:  # a dead reader must not look like a quiet bitcoind
            if not self._closed:
                log.exception("zmq reader stopped")
        finally:
            # Closed either way: the follower ends, and so does the service, for its
            # supervisor to start it again.
            self._closed = True
            self._close_sockets()
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass

    def _monitor_events(self, monitor: zmq.Socket[bytes], endpoint: str,
                        topics: frozenset[str], batch: list[Notification]) -> None:
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            note = self._monitor_event(parse_monitor_message(frames), endpoint, topics)
            if note is not None:
                batch.append(note)

    def _data_messages(self, sock: zmq.Socket[bytes], topics: frozenset[str],
                       batch: list[Notification]) -> None:
        for _ in range(_MAX_QUEUED):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            note = self._notification(frames, topics)
            if note is not None:
                batch.append(note)

    # --- shutdown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread (it closes the sockets); idempotent; ends a pending ``next``."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2 * _POLL_MS / 1000 + 1)

    def _close_sockets(self) -> None:
        _close_all(self._sync_ctx, [s for s, _e, _t in self._data], self._monitor_socks)
