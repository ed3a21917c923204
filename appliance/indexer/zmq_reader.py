"""bitcoind's ZMQ notifications read on the event loop from plain sockets, in batches.

A mempool burst arrives as two messages per transaction (``rawtx``, ``sequence``),
one by one as bitcoind accepts them (~100-300 a second here). What a message cost was
mostly the wake-ups around it, not the work on it (docs/performance.md, "Mempool
intake"): pyzmq's asyncio sockets cost a poll, a future and a loop wake-up per
message; the reader thread this replaces cost, per batch, a wake-up of that thread,
a self-pipe write, a loop wake-up and GIL hand-offs, plus a poll every 100 ms idle.

Here the loop watches the sockets' ZMQ_FD (``add_reader``) and one callback reads
every queued message with ``NOBLOCK``: no thread, no future per message. While
messages keep coming (a read within ``_BURST_S`` of the last) it stops watching the
data sockets and reads again after ``_LINGER_S``, then after twice as long while each
read finds more, up to ``_LINGER_MAX_S``, until a read finds nothing; then it watches
again. A burst of any rate costs one timer wake-up per 100 ms once it has lasted a
few tenths of a second (a wake-up of the loop cost ~0.3 ms of CPU on the development
VM, five times one transaction's work). A lone notification (a payment, a block after
a quiet spell) is read at once; one in a burst waits 20 ms at its start, at most
``_LINGER_MAX_S`` in a long one. The monitor sockets stay watched (a disconnect
is read at once, and before the data after it). While ``_MAX_QUEUED`` notifications
wait untaken, reading stops, so bitcoind's queue (the HWM) fills and overflows into
a gap as before, instead of this process's memory.

ZMQ_FD is edge-triggered in ZMQ's sense: it signals a change (the first message into
an empty queue), not data waiting. So every read drains a socket until ``zmq.Again``
(which re-arms the signal), and watching resumes only after such a read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..node import ZMQSubscriber
from ..node.zmq_sub import Notification, _close_all

__all__ = ["LoopSubscriber"]

log = logging.getLogger("indexer.zmq")

_MAX_QUEUED = 20_000  # notifications read and not yet taken by the consumer
# A read that finds messages less than _BURST_S after the last one did starts a burst:
# the data sockets are read again _LINGER_S later instead of when a message comes, then
# after twice as long while each read finds more, up to _LINGER_MAX_S.
_BURST_S = 0.05
_LINGER_S = 0.02
_LINGER_MAX_S = 0.1


def _fd(sock: zmq.Socket[bytes]) -> int:
    fd = sock.getsockopt(zmq.FD)
    assert isinstance(fd, int)
    return fd


class LoopSubscriber(ZMQSubscriber):
    """A :class:`ZMQSubscriber` read by event-loop callbacks in batches (see module doc).

    Construct it inside the running event loop (it reads on that loop)."""

    def __init__(self, endpoints: Mapping[str, str], *, hwm: Mapping[str, int] | None = None
                 ) -> None:
        # Not the parent's __init__: its sockets are asyncio ones. The parent's
        # sequence tracking (``_track``) and accessors work on the same fields.
        plan = self._init_state(endpoints, hwm)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None  # a reader waiting in next()
        self._sync_ctx = zmq.Context()
        self._data: list[tuple[zmq.Socket[bytes], str, frozenset[str]]] = []
        self._monitor_socks: dict[zmq.Socket[bytes], tuple[str, frozenset[str]]] = {}
        self._monitor_fds: list[int] = []  # always watched
        self._data_fds: list[int] = []  # watched unless a read is due (_later) or full
        self._watching = False
        self._later: asyncio.TimerHandle | None = None  # the burst's next read
        self._full = False  # stopped at _MAX_QUEUED; next() resumes
        self._last = 0.0  # monotonic time of the last read that found something
        self._linger = _LINGER_S  # the burst's next wait
        try:
            for endpoint, (topics, queue) in plan.items():
                self._data.append((self._open_sync(endpoint, topics, queue), endpoint,
                                   frozenset(topics)))
            for monitor in self._monitor_socks:
                self._monitor_fds.append(_fd(monitor))
                self._loop.add_reader(self._monitor_fds[-1], self._read)
            self._data_fds = [_fd(s) for s, _e, _t in self._data]
            self._watch()
            # Anything already queued (and signalled before we watched) is read now.
            self._loop.call_soon(self._read)
        except BaseException:
            self.close()
            raise

    @property
    def endpoints(self) -> dict[str, tuple[str, ...]]:
        return {ep: tuple(sorted(topics)) for _, ep, topics in self._data}

    def _open_sync(self, endpoint: str, topics: list[str], queue: int) -> zmq.Socket[bytes]:
        sock = self._sync_ctx.socket(zmq.SUB)
        monitor: zmq.Socket[bytes] = self._connect(sock, endpoint, topics, queue)
        self._monitor_socks[monitor] = (endpoint, frozenset(topics))
        return sock

    # --- the consumer ---------------------------------------------------------------------
    async def next(self, timeout: float | None = None) -> Notification | None:
        while True:
            if self._closed:  # as the parent: nothing once closed, queued or not (the
                return None   # owner that closed it, or the service ending, resyncs)
            if self._pending:
                if self._full and len(self._pending) <= _MAX_QUEUED // 2:
                    self._full = False
                    if self._later is None:  # else the burst's read comes anyway
                        self._resume()
                return self._pending.popleft()
            # A bare future, not wait_for(): no task per wait.
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- reading (loop callbacks) ---------------------------------------------------------
    def _watch(self) -> None:
        if not self._watching:
            for fd in self._data_fds:
                self._loop.add_reader(fd, self._read)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            for fd in self._data_fds:
                self._loop.remove_reader(fd)
            self._watching = False

    def _resume(self) -> None:
        """The burst's wait is over: read; watch again once a read finds nothing new
        (the burst is over; that read drained the sockets, re-arming their fds)."""
        self._later = None
        self._read(timed=True)
        if self._later is None and not self._full and not self._closed:
            self._linger = _LINGER_S
            self._watch()

    def _read(self, timed: bool = False) -> None:
        if self._closed:
            return
        try:
            got = self._read_all()
        except Exception:  # a dead reader must not look like a quiet bitcoind
            log.exception("zmq reader stopped")
            self.close()  # the follower ends, and so does the service, to be restarted
            return
        if got:
            self._wake()
        if len(self._pending) >= _MAX_QUEUED:
            self._full = True  # ZMQ queues meanwhile; next() resumes
            self._unwatch()
        elif got and self._later is None:
            now = time.monotonic()
            if timed or now - self._last < _BURST_S:
                # Unwatched until the burst ends: no wake-up per message meanwhile.
                if timed:  # the burst goes on: each wake-up costs more than a message
                    self._linger = min(2 * self._linger, _LINGER_MAX_S)
                self._unwatch()
                self._later = self._loop.call_later(self._linger, self._resume)
            self._last = now

    def _read_all(self) -> int:
        """Read what is queued: monitors first (a disconnect must be known before the
        data after it), then the data sockets unless reading is paused."""
        before = len(self._pending)
        for monitor, (endpoint, topics) in self._monitor_socks.items():
            while True:
                try:
                    frames = monitor.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                note = self._monitor_event(parse_monitor_message(frames), endpoint, topics)
                if note is not None:
                    self._pending.append(note)
        if not self._full:
            for sock, _endpoint, topics in self._data:
                self._read_data_sync(sock, topics)
        return len(self._pending) - before

    def _read_data_sync(self, sock: zmq.Socket[bytes], topics: frozenset[str]) -> None:
        pending = self._pending
        while len(pending) < _MAX_QUEUED:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            note = self._notification(frames, topics)
            if note is not None:
                pending.append(note)

    # --- shutdown -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading and close the sockets; idempotent; ends a pending ``next``."""
        if self._closed:
            return
        self._closed = True
        if self._later is not None:
            self._later.cancel()
        if not self._loop.is_closed():
            self._unwatch()
            for fd in self._monitor_fds:
                self._loop.remove_reader(fd)
        self._wake()
        _close_all(self._sync_ctx, [s for s, _e, _t in self._data], self._monitor_socks)
