"""The listening side of the status bus: the display, ``appliance status``, the supervisor.

:class:`StatusSubscriber` (asyncio, long-running) connects to every
``<run_dir>/status/*.sock``, rescans the directory for services that start later,
keeps the latest snapshot per service and calls a service **stale** once nothing
(not even a heartbeat) arrived for ``stale_after`` seconds (``age >= stale_after``, the
display's rule too). Iterate it for changes.

:func:`read_status_once` (synchronous, for CLIs) listens just long enough to hear every
live publisher once: a publisher answers a new subscriber at once, so that is usually
milliseconds, and never more than one heartbeat.

Both use :class:`StatusTracker`, the bookkeeping without I/O. Time is the monotonic
clock of this process, never the messages' ``ts``: a Pi has no real-time clock, and its
wall clock jumps when NTP first answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import zmq
import zmq.asyncio

from .paths import service_from_socket, status_dir
from .schema import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STALE_AFTER_S,
    MAX_MESSAGE_BYTES,
    Event,
    SchemaError,
    ServiceStatus,
    check_service_name,
    decode_status,
)

__all__ = [
    "DEFAULT_RESCAN_S",
    "ServiceState",
    "StatusSubscriber",
    "StatusTracker",
    "StatusUpdate",
    "TrackerStats",
    "describe_states",
    "read_status_once",
]

log = logging.getLogger("status")

#: How often the subscriber looks for new sockets in ``<run_dir>/status/``.
DEFAULT_RESCAN_S = 2.0

# Only the latest snapshot matters: a short queue bounds memory if we fall behind.
_RCVHWM = 64
# A publisher restarted by supervisord is found again within a second.
_RECONNECT_IVL_MS = 100
_RECONNECT_IVL_MAX_MS = 1_000
# Messages read per socket per wake-up, so one chatty service cannot starve the others.
_BATCH = 64


class ServiceState(NamedTuple):
    """What a subscriber knows of one service.

    ``status`` is None while nothing has been heard from it (a socket found but silent,
    or an expected service without a socket). ``age_s`` is the time since the last
    message (None if never), ``stale`` that the service should have been heard from
    by now and was not: a dead, hung or never-started service, never "fine".
    """

    status: ServiceStatus | None
    age_s: float | None
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``appliance status --json``."""
        return {"status": None if self.status is None else self.status.as_dict(),
                "age_s": None if self.age_s is None else round(self.age_s, 3),
                "stale": self.stale}

    def describe(self) -> str:
        """One human line (without the service name)."""
        if self.status is None:
            return "no status heard (not running?)" if self.stale else "waiting for its first status"
        text = self.status.describe()
        if self.stale:
            text = f"STALE, last heard {self.age_s or 0:.0f} s ago: {text}"
        if self.status.last_error:
            when = ""
            if self.status.last_error_ts is not None:
                when = f" ({max(0.0, time.time() - self.status.last_error_ts):.0f} s ago)"
            text += f"; last error{when}: {self.status.last_error}"
        return text


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A change worth redrawing for: a new or changed snapshot, a stale flip, events.

    ``events`` are the one-shot events the message carried (delivered once).
    """

    service: str
    state: ServiceState
    events: tuple[Event, ...] = ()


@dataclass
class TrackerStats:
    received: int = 0
    malformed: dict[str, int] = field(default_factory=dict)  # per socket name
    restarts: int = 0  # seq went backwards: the publisher's process started over


@dataclass
class _Entry:
    since: float  # when we started expecting it (staleness of a never-heard service)
    status: ServiceStatus | None = None
    heard: float | None = None
    stale: bool = False


class StatusTracker:
    """The latest snapshot per service and who is stale; no I/O, so any clock will do.

    ``watch`` a service when its socket appears (or ``expected`` ones from the
    start), ``feed`` it the raw messages from that socket, call ``expire`` by
    ``next_deadline`` to learn which services just went stale.
    """

    def __init__(self, *, stale_after: float = DEFAULT_STALE_AFTER_S, expected: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not stale_after > 0:
            raise ValueError("stale_after must be positive")
        self.stale_after = stale_after
        self.stats = TrackerStats()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        for service in expected:
            self.watch(service)

    def watch(self, service: str) -> None:
        if service not in self._entries:
            self._entries[check_service_name(service)] = _Entry(since=self._clock())

    @property
    def services(self) -> list[str]:
        return sorted(self._entries)

    def feed_frames(self, service: str, frames: list[bytes]) -> StatusUpdate | None:
        """:meth:`feed` for a ZMQ message: a status is exactly one frame."""
        if len(frames) != 1:
            self.stats.malformed[service] = self.stats.malformed.get(service, 0) + 1
            raise SchemaError(f"message: expected one frame, got {len(frames)}")
        return self.feed(service, frames[0])

    def feed(self, service: str, raw: bytes) -> StatusUpdate | None:
        """Take one message from ``service``'s socket; the update it makes, if any.

        Raises SchemaError for a malformed message (counted; it does not count as
        being alive either).
        """
        entry = self._entries.get(service)
        if entry is None:
            raise KeyError(f"not watching {service!r}")
        try:
            status = decode_status(raw)
            if status.service != service:
                raise SchemaError(f"service: {service}.sock sent a status for {status.service!r}")
        except SchemaError:
            self.stats.malformed[service] = self.stats.malformed.get(service, 0) + 1
            raise
        self.stats.received += 1
        prev, was_stale = entry.status, entry.stale
        if prev is not None and status.seq < prev.seq:
            self.stats.restarts += 1
        entry.status = dataclasses.replace(status, events=())  # events are one-shot
        entry.heard = self._clock()
        entry.stale = False
        if prev is None or was_stale or status.events or not status.same_state(prev):
            return StatusUpdate(service, self._state(entry), status.events)
        return None  # a heartbeat: fresher, nothing new to show

    def expire(self) -> list[StatusUpdate]:
        """Services that went stale since the last call."""
        now = self._clock()
        out = []
        for service, entry in self._entries.items():
            if not entry.stale and self._silent_for(entry, now) >= self.stale_after:
                entry.stale = True
                out.append(StatusUpdate(service, self._state(entry, now)))
        return out

    def next_deadline(self) -> float | None:
        """When (on the tracker's clock) the next service would go stale, if any can."""
        times = [(e.heard if e.heard is not None else e.since) + self.stale_after
                 for e in self._entries.values() if not e.stale]
        return min(times, default=None)

    def state(self, service: str) -> ServiceState:
        return self._state(self._entries[service])

    def snapshot(self) -> dict[str, ServiceState]:
        now = self._clock()
        return {service: self._state(self._entries[service], now) for service in sorted(self._entries)}

    @staticmethod
    def _silent_for(entry: _Entry, now: float) -> float:
        return now - (entry.heard if entry.heard is not None else entry.since)

    def _state(self, entry: _Entry, now: float | None = None) -> ServiceState:
        now = self._clock() if now is None else now
        # Computed, not only flagged by expire(), so a caller that never calls expire()
        # still cannot see a silent service as fine.
        stale = entry.stale or self._silent_for(entry, now) >= self.stale_after
        age = None if entry.heard is None else max(0.0, now - entry.heard)
        return ServiceState(entry.status, age, stale)


def _sockets_in(run_dir: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    try:
        paths = sorted(status_dir(run_dir).iterdir())
    except FileNotFoundError:  # no service has started yet
        return
    for path in paths:
        service = service_from_socket(path)
        if service is None:
            continue
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                continue
        except FileNotFoundError:  # went away while we looked
            continue
        yield service, path


def _configure(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, _RCVHWM)
    # libzmq drops a peer that sends more: a runaway publisher cannot fill our memory.
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.SUBSCRIBE, b"")


def _readable(sock: zmq.Socket[Any]) -> bool:
    # get(), not getsockopt(): on an asyncio socket only get() re-arms its edge-triggered fd.
    events = sock.get(zmq.EVENTS)
    return isinstance(events, int) and bool(events & zmq.POLLIN)


def _note_malformed(tracker: StatusTracker, service: str, exc: SchemaError) -> None:
    count = tracker.stats.malformed.get(service, 0)
    if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th...: visible, but cannot flood the log
        log.warning("status: ignoring a malformed message from %s.sock (%d so far): %s",
                    service, count, exc)


class StatusSubscriber:
    """Listens to every service on the bus; ``async for update in sub`` for changes.

    ``snapshot()`` is the current picture (safe to call from any task of the loop);
    ``expected`` services appear in it from the start and go stale if they never
    show up. Iterate from one task only. ``close()`` (or ``async with``) ends it.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *,
                 stale_after: float = DEFAULT_STALE_AFTER_S, rescan_s: float = DEFAULT_RESCAN_S,
                 expected: Iterable[str] = ()) -> None:
        if not rescan_s > 0:
            raise ValueError("rescan_s must be positive")
        self.run_dir = Path(run_dir)
        self.rescan_s = rescan_s
        self.tracker = StatusTracker(stale_after=stale_after, expected=expected)
        self._pending: deque[StatusUpdate] = deque()
        self._closed = False
        self._closing = asyncio.Event()
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._poller = zmq.asyncio.Poller()
        self._next_scan = 0.0
        try:
            self.rescan()
        except BaseException:
            self.close()
            raise

    @property
    def stats(self) -> TrackerStats:
        return self.tracker.stats

    def snapshot(self) -> dict[str, ServiceState]:
        """Every known service -> (status, age_s, stale)."""
        return self.tracker.snapshot()

    def rescan(self) -> list[str]:
        """Connect to sockets that appeared since the last look; returns their services.

        A socket once found stays connected: if its process dies, libzmq reconnects by
        itself when a new one binds the same path, and the service shows stale meanwhile.
        """
        self._next_scan = time.monotonic() + self.rescan_s
        if self._closed:
            return []
        found = []
        for service, path in _sockets_in(self.run_dir):
            if service in self._sockets:
                continue
            sock = self._ctx.socket(zmq.SUB)
            try:
                _configure(sock)
                sock.connect(f"ipc://{path}")
            except BaseException:
                sock.close(linger=0)
                raise
            self._sockets[service] = sock
            self._poller.register(sock, zmq.POLLIN)
            self.tracker.watch(service)
            found.append(service)
        if found:
            log.debug("status: listening to %s", ", ".join(found))
        return found

    # --- iteration -----------------------------------------------------------------------
    async def run(self) -> None:
        """Keep ``snapshot()`` current without looking at updates (e.g. a task for a
        display that redraws on its own timer); returns when closed."""
        async for _update in self:
            pass

    def __aiter__(self) -> StatusSubscriber:
        return self

    async def __anext__(self) -> StatusUpdate:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            if time.monotonic() >= self._next_scan:
                self.rescan()
            self._pending.extend(self.tracker.expire())
            if self._pending:
                continue
            stale_at = self.tracker.next_deadline()
            deadline = min(self._next_scan, math.inf if stale_at is None else stale_at)
            timeout_ms = max(1, math.ceil((deadline - time.monotonic()) * 1000))
            if not self._sockets:  # nothing to poll: wait for the next scan, or close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout_ms / 1000)
                continue
            try:
                ready = dict(await self._poller.poll(timeout_ms))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # close() from another task cancels the poll: that is the end of the stream.
                if self._closed and (task is None or not task.cancelling()):
                    raise StopAsyncIteration from None
                raise
            except zmq.ZMQError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            for service, sock in list(self._sockets.items()):
                if sock in ready:
                    await self._read(service, sock)

    async def _read(self, service: str, sock: zmq.asyncio.Socket) -> None:
        for _ in range(_BATCH):
            if self._closed or not _readable(sock):
                return
            frames = await sock.recv_multipart()
            try:
                update = self.tracker.feed_frames(service, frames)
            except SchemaError as exc:
                _note_malformed(self.tracker, service, exc)
                continue
            if update is not None:
                self._pending.append(update)

    # --- shutdown ------------------------------------------------------------------------
    def close(self) -> None:
        """Close every socket; idempotent; ends a pending ``async for``."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._ctx.term()

    async def __aenter__(self) -> StatusSubscriber:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


# --- one-shot, for CLIs -------------------------------------------------------------------
def _listening(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path``.

    A killed publisher leaves its socket file behind; connecting to it is refused at
    once, so the CLI need not wait a heartbeat to learn that the service is gone.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:  # busy (EAGAIN) or anything odd: let ZMQ find out
            return True
    return True


def read_status_once(run_dir: str | os.PathLike[str], timeout: float | None = None, *,
                     expected: Iterable[str] = ()) -> dict[str, ServiceState]:
    """Every service on the bus now, for ``appliance status``; synchronous, no event loop.

    Listens until each socket found has answered or ``timeout`` seconds passed
    (default: one heartbeat plus half a second; a live publisher answers a new
    subscriber at once). A service heard is ``(status, age_s, False)``. A service not
    heard, because its process is gone (a socket file left behind), hung, or it is in
    ``expected`` but has no socket, is ``(None, None, True)``: stale, never fine.
    """
    wait = DEFAULT_HEARTBEAT_S + 0.5 if timeout is None else timeout
    tracker = StatusTracker(stale_after=math.inf, expected=expected)
    ctx = zmq.Context()
    sockets: dict[zmq.Socket[bytes], str] = {}
    poller = zmq.Poller()
    try:
        for service, path in _sockets_in(run_dir):
            tracker.watch(service)
            if not _listening(path):
                continue
            sock = ctx.socket(zmq.SUB)
            sockets[sock] = service
            _configure(sock)
            sock.connect(f"ipc://{path}")
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + wait
        unheard = set(sockets.values())
        while unheard:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for sock, _event in poller.poll(max(1, math.ceil(remaining * 1000))):
                service = sockets[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.DONTWAIT)
                    except zmq.Again:
                        break
                    try:
                        tracker.feed_frames(service, frames)
                    except SchemaError as exc:
                        _note_malformed(tracker, service, exc)
                        continue
                    unheard.discard(service)
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()
    return {service: state if state.status is not None else ServiceState(None, None, True)
            for service, state in tracker.snapshot().items()}


def describe_states(states: dict[str, ServiceState]) -> list[str]:
    """Human lines, one per service, for ``appliance status``."""
    width = max((len(s) for s in states), default=0)
    return [f"{service:<{width}}  {state.describe()}" for service, state in sorted(states.items())]
