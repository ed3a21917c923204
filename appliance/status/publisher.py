"""A service's side of the status bus: one ZMQ XPUB socket at ``<run_dir>/status/<service>.sock``.

The publisher keeps the service's latest full snapshot and sends it:

* when it changes (``publish``/``update``/``event``), at most ``max_rate`` messages a
  second: a burst coalesces into one message with the latest snapshot, sent when the
  rate allows;
* again every ``heartbeat_s`` seconds when nothing changed (same ``seq``, no events),
  so subscribers can tell a quiet service from a dead or hung one;
* again as soon as a subscriber joins (the XPUB socket hears its subscription), so
  ``appliance status`` need not wait for the next heartbeat.

Sending never blocks: nobody listening, or a subscriber too slow to keep up (send
high-water mark), means the message is dropped, and the next one carries the whole
state anyway. Use it from the service's event loop thread only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import zmq

from .paths import ensure_status_dir, status_socket_path
from .schema import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_RATE,
    MAX_DETAIL_CHARS,
    MAX_ERROR_CHARS,
    MAX_EVENTS,
    Event,
    Phase,
    SchemaError,
    ServiceStatus,
    check_key,
    clip_text,
    encode_status,
)

__all__ = ["KEEP", "PublisherStats", "StatusPublisher"]

log = logging.getLogger("status")


class _Keep(enum.Enum):
    KEEP = 0


#: "leave this field as it is" in :meth:`StatusPublisher.update`.
KEEP: Final = _Keep.KEEP

# A subscriber that cannot keep up loses messages beyond this many (it only ever needs
# the latest one); the service's memory stays bounded whatever the display does.
_SNDHWM = 32
# Subscription messages are one byte plus an (empty) topic; refuse anything bigger.
_MAX_INBOUND = 64
_DROPPED_KIND = "events_dropped"


@dataclass
class PublisherStats:
    """What the publisher did since it was created (for tests and debugging)."""

    fresh: int = 0  # messages with a new snapshot (seq advanced)
    repeats: int = 0  # heartbeats and answers to a joining subscriber
    coalesced: int = 0  # snapshots replaced by a newer one before they went out
    joined: int = 0  # subscriptions heard
    errors: int = 0  # sends that failed; counted, never raised into the service


class StatusPublisher:
    """Publishes one service's :class:`ServiceStatus` on the status bus.

    Binds at construction (removing a stale socket file a killed process left), but
    sends nothing until :meth:`start` (or ``async with``), which needs the running
    event loop. The first snapshot is ``phase=starting``; change it with :meth:`update`
    (fields by keyword) or :meth:`publish` (a whole :class:`ServiceStatus`); report
    one-shot happenings with :meth:`event`. :meth:`close` sends a last ``stopping``
    snapshot (unless the service already said ``error``) and removes the socket file.
    """

    def __init__(self, run_dir: str | os.PathLike[str], service: str, *,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, max_rate: float = DEFAULT_MAX_RATE,
                 initial: ServiceStatus | None = None) -> None:
        if not heartbeat_s > 0 or not max_rate > 0:
            raise ValueError("heartbeat_s and max_rate must be positive")
        if heartbeat_s * max_rate < 1:
            raise ValueError("heartbeat_s must be at least one rate-limit interval (1/max_rate)")
        self.service = service
        self.path: Path = status_socket_path(run_dir, service)  # validates the name
        self.endpoint = f"ipc://{self.path}"
        self.heartbeat_s = heartbeat_s
        self.stats = PublisherStats()
        self._interval = 1.0 / max_rate
        if initial is not None and initial.service != service:
            raise SchemaError(f"service: this publisher is {service!r}, got {initial.service!r}")
        self._status = dataclasses.replace(initial or ServiceStatus(service), events=(), seq=0)
        self._seq = 0
        self._events: dict[tuple[str, str], int] = {}
        self._events_dropped = 0
        self._dirty = True  # the current snapshot has not gone out yet
        self._resend = False  # a subscriber joined or a heartbeat is due
        self._last_send = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Own context, not Context.instance(): no process-wide state, and close() can
        # terminate it knowing nobody else uses it.
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.SNDHWM, _SNDHWM)
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # hear every subscriber, not just the first
            self._sock.setsockopt(zmq.MAXMSGSIZE, _MAX_INBOUND)
            ensure_status_dir(run_dir)
            self.path.unlink(missing_ok=True)  # a stale socket from a killed process
            old = os.umask(0o077)  # the socket file is 0600 from the start
            try:
                self._sock.bind(self.endpoint)
            finally:
                os.umask(old)
            self._inode = self.path.stat().st_ino
        except BaseException:
            self._sock.close(linger=0)
            self._ctx.term()
            raise

    # --- what the service calls --------------------------------------------------------
    @property
    def status(self) -> ServiceStatus:
        """The current snapshot (``seq``/``ts`` as last sent)."""
        return self._status

    def publish(self, status: ServiceStatus) -> None:
        """Make ``status`` the current snapshot and send it as soon as the rate allows.

        Its ``seq`` and ``ts`` are ignored (the publisher stamps them); its ``events``
        join the pending ones. Publishing the same state again sends nothing new.
        """
        if status.service != self.service:
            raise SchemaError(f"service: this publisher is {self.service!r}, got {status.service!r}")
        if self._closed:
            return  # shutting down: the last word has been said
        for ev in status.events:
            self._add_event(ev.kind, ev.detail, ev.count)
        if status.last_error is not None and status.last_error_ts is None:
            # The same error again is not news; a new one is stamped now.
            same = status.last_error == self._status.last_error
            status = dataclasses.replace(
                status, last_error_ts=self._status.last_error_ts if same else time.time())
        changed = not status.same_state(self._status)
        if not changed and not status.events:
            return
        if changed:
            if self._dirty and self._loop is not None:
                self.stats.coalesced += 1
            self._status = dataclasses.replace(status, events=(), seq=self._status.seq,
                                               ts=self._status.ts)
        self._dirty = True
        self._pump()

    def update(self, *, phase: Phase | _Keep = KEEP, progress: float | None | _Keep = KEEP,
               eta_s: float | None | _Keep = KEEP, detail: str | _Keep = KEEP,
               counters: Mapping[str, int | float] | _Keep = KEEP,
               last_error: str | BaseException | None | _Keep = KEEP) -> ServiceStatus:
        """Change some fields of the current snapshot and publish it; returns it.

        Lenient where a service cannot be exact: ``progress`` is clamped to 0..1 (NaN
        means unknown), a negative ``eta_s`` becomes 0, text is clipped to one line of
        the schema's length. A new ``phase`` resets ``progress`` and ``eta_s`` to
        unknown unless given too. ``counters`` are merged into the current ones.
        ``last_error`` takes text or an exception and stamps ``last_error_ts``; None
        clears both.
        """
        cur = self._status
        changes: dict[str, Any] = {}
        if phase is not KEEP and phase != cur.phase:
            changes.update(phase=phase, progress=None, eta_s=None)
        if progress is not KEEP:
            changes["progress"] = None if progress is None or math.isnan(progress) else \
                min(1.0, max(0.0, float(progress)))
        if eta_s is not KEEP:
            changes["eta_s"] = None if eta_s is None or not math.isfinite(eta_s) else \
                max(0.0, float(eta_s))
        if detail is not KEEP:
            changes["detail"] = clip_text(detail, MAX_DETAIL_CHARS)
        if counters is not KEEP:
            changes["counters"] = {**cur.counters, **counters}
        if last_error is not KEEP:
            if last_error is None:
                changes.update(last_error=None, last_error_ts=None)
            else:
                text = last_error if isinstance(last_error, str) else _describe_exception(last_error)
                changes.update(last_error=clip_text(text, MAX_ERROR_CHARS), last_error_ts=time.time())
        new = dataclasses.replace(cur, **changes)
        self.publish(new)
        return new

    def event(self, kind: str, detail: str = "", count: int = 1) -> None:
        """Report a one-shot happening; it goes out once, with the next message."""
        check_key("events[].kind", kind)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SchemaError(f"events[].count: expected a positive integer, got {count!r}")
        if self._closed:
            return
        self._add_event(kind, clip_text(detail, MAX_DETAIL_CHARS), count)
        self._dirty = True
        self._pump()

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start sending: the first snapshot, heartbeats, answers to new subscribers."""
        if self._closed:
            raise RuntimeError("status publisher is closed")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd(), self._on_readable)
        self._task = self._loop.create_task(self._heartbeat(), name=f"status-{self.service}")
        self._task.add_done_callback(_report_crash)
        self._dirty = True
        self._pump()

    def close(self, *, linger_s: float = 0.2) -> None:
        """Say ``stopping`` (unless ``error``), stop, remove the socket file; idempotent.

        ``linger_s`` bounds how long the last message may take to leave.
        """
        if self._closed:
            return
        linger = 0
        if self._loop is not None and not self._sock.closed:
            if self._status.phase not in (Phase.ERROR, Phase.STOPPING):
                self._status = dataclasses.replace(self._status, phase=Phase.STOPPING,
                                                   progress=None, eta_s=None)
                self._dirty = True
            if self._dirty or self._events:
                self._send_now()  # the last word skips the rate limit
            linger = int(linger_s * 1000)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # After asyncio.run() has finished, the loop is closed and took its tasks with it.
        if self._loop is not None and not self._loop.is_closed():
            if self._task is not None:
                self._task.cancel()
            self._loop.remove_reader(self._fd())
        self._sock.close(linger=linger)
        self._ctx.term()
        try:
            # Only our own file: a new instance may already have bound the same path.
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def __aenter__(self) -> StatusPublisher:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    # --- sending -----------------------------------------------------------------------
    def _add_event(self, kind: str, detail: str, count: int) -> None:
        key = (kind, detail)
        if key in self._events or len(self._events) < MAX_EVENTS - 1:
            self._events[key] = self._events.get(key, 0) + count
        else:  # the last slot is kept for saying how many did not fit
            self._events_dropped += count

    def _take_events(self) -> tuple[Event, ...]:
        events = [Event(kind, count, detail) for (kind, detail), count in self._events.items()]
        if self._events_dropped:
            events.append(Event(_DROPPED_KIND, self._events_dropped))
        self._events.clear()
        self._events_dropped = 0
        return tuple(events)

    def _pump(self) -> None:
        """Send now if something is due and the rate allows, else make sure a timer will."""
        if self._closed or self._loop is None or not (self._dirty or self._resend):
            return
        wait = self._last_send + self._interval - time.monotonic()
        if wait <= 0:
            self._send_now()
            if not (self._dirty or self._resend):
                return
            wait = self._interval
        if self._timer is None:
            self._timer = self._loop.call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _send_now(self) -> None:
        fresh = self._dirty
        if fresh:
            self._seq += 1
        events = self._take_events() if fresh else ()
        stamped = dataclasses.replace(self._status, seq=self._seq, ts=time.time())
        self._status = stamped
        self._dirty = self._resend = False
        self._last_send = time.monotonic()  # even on failure, so a heartbeat cannot spin
        try:
            raw = encode_status(dataclasses.replace(stamped, events=events))
            # XPUB drops rather than blocks at the high-water mark; DONTWAIT makes sure.
            self._sock.send(raw, zmq.DONTWAIT)
        except (zmq.ZMQError, SchemaError) as exc:
            self.stats.errors += 1
            log.debug("status %s: send failed: %s", self.service, exc)
        else:
            if fresh:
                self.stats.fresh += 1
            else:
                self.stats.repeats += 1
        self._drain()

    # --- subscriptions and heartbeat ---------------------------------------------------
    def _fd(self) -> int:
        fd = self._sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        return fd

    def _on_readable(self) -> None:
        self._drain()
        self._pump()

    def _drain(self) -> None:
        """Read pending subscriptions; a new subscriber gets the snapshot at once.

        The ZMQ fd only signals that the socket's state *may* have changed, and any
        operation on the socket (a send, too) can consume that signal: so after every
        send, and on every wake-up, read until the socket says nothing is left.
        """
        while not self._sock.closed:
            try:
                events = self._sock.getsockopt(zmq.EVENTS)
                if not isinstance(events, int) or not events & zmq.POLLIN:
                    return
                frame = self._sock.recv(zmq.DONTWAIT)
            except zmq.ZMQError:
                return
            if frame[:1] == b"\x01":  # subscribe; b"\x00" is unsubscribe
                self.stats.joined += 1
                self._resend = True

    async def _heartbeat(self) -> None:
        while True:
            due = self._last_send + self.heartbeat_s - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                continue
            self._resend = True
            self._pump()
            await asyncio.sleep(self._interval)  # never spin, whatever the clock does


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("status heartbeat stopped", exc_info=task.exception())
