"""The one button: a debounce and press-length state machine, and where its edges come from.

``ButtonStateMachine`` is pure: feed it the raw level with a timestamp at every edge and
call ``poll(now)`` when its ``deadline()`` comes; it returns events. A level counts once
it has been stable for ``debounce`` seconds, and a press is timed from the raw edge that
began that stable level, so contact chatter neither adds presses nor shifts their length.

Per debounced press exactly one outcome follows ``DOWN``:

* released before ``countdown_after`` (1 s): ``SHORT_PRESS``;
* held past ``countdown_after``: ``COUNTDOWN`` events with the whole seconds left
  (4, 3, 2, 1 for a 5 s threshold) so the display can show "Hold to reset pairing: 3";
  releasing then gives ``CANCELLED`` (not a short press: the owner let go on purpose);
* held for ``long_press`` (5 s): ``LONG_PRESS``, at once, without waiting for release.

Edges come from a ``ButtonInput``. ``GPIOButtonInput`` uses RPi.GPIO edge callbacks,
which run on RPi.GPIO's own thread, and hands each edge to the event loop with
``call_soon_threadsafe``. ``SimulatedButtonInput`` reads text commands ("press", "long",
"down", "up", "hold 2.5") from a FIFO or a Unix socket for ``sim``. ``Button`` joins an
input to a state machine on the running loop and queues the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Literal, Protocol

__all__ = [
    "Button",
    "ButtonEvent",
    "ButtonEventKind",
    "ButtonInput",
    "ButtonStateMachine",
    "ButtonTiming",
    "EdgeSink",
    "GPIOButtonInput",
    "SimulatedButtonInput",
    "parse_sim_command",
]

log = logging.getLogger(__name__)

# Thresholds are compared with this slack so that a timer firing at exactly the deadline
# (computed by float subtraction) counts as having reached it.
_EPS = 1e-9

#: Called on the event loop's thread with (pressed, monotonic timestamp of the edge).
EdgeSink = Callable[[bool, float], None]


class ButtonEventKind(Enum):
    DOWN = "down"  # a debounced press began: wake the display
    COUNTDOWN = "countdown"  # held past countdown_after; seconds_left until LONG_PRESS
    SHORT_PRESS = "short_press"  # released before the countdown began
    LONG_PRESS = "long_press"  # held for long_press seconds (sent while still held)
    CANCELLED = "cancelled"  # released during the countdown: do nothing, drop the overlay


@dataclass(frozen=True)
class ButtonEvent:
    kind: ButtonEventKind
    at: float  # when it happened (monotonic seconds), not when it was noticed
    seconds_left: int | None = None  # COUNTDOWN only


@dataclass(frozen=True)
class ButtonTiming:
    debounce: float = 0.030
    long_press: float = 5.0
    countdown_after: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.debounce < self.countdown_after < self.long_press:
            raise ValueError("button timing must satisfy 0 <= debounce < countdown_after < long_press, "
                             f"got {self.debounce}, {self.countdown_after}, {self.long_press}")


class ButtonStateMachine:
    """Debounced level, press timing and events; no clock, no threads, no I/O."""

    def __init__(self, timing: ButtonTiming | None = None) -> None:
        self.timing = timing or ButtonTiming()
        self._raw = False
        self._raw_since = -math.inf
        self._level = False
        self._pressed_at = 0.0
        self._shown: int | None = None  # last COUNTDOWN value of this press
        self._long_fired = False
        self._horizon = -math.inf  # timers have been evaluated up to here
        self.now = -math.inf  # latest time seen

    @property
    def pressed(self) -> bool:
        """The debounced level."""
        return self._level

    def feed(self, pressed: bool, at: float) -> list[ButtonEvent]:
        """A raw edge (or a sample: repeating the current level is harmless)."""
        events = self.poll(at)
        if pressed != self._raw:
            self._raw = pressed
            self._raw_since = at
        return events + self.poll(at)

    def poll(self, now: float) -> list[ButtonEvent]:
        """Let time pass up to ``now`` without an edge."""
        if now < self.now:
            raise ValueError(f"button time went backwards: {now} < {self.now}")
        self.now = now
        events: list[ButtonEvent] = []
        if self._raw != self._level:
            # Until the new level has been stable for `debounce` it may be chatter, so
            # the press is only timed up to where the change began.
            events += self._advance(self._raw_since)
            if now + _EPS < self._raw_since + self.timing.debounce:
                return events
            events += self._transition(self._raw, self._raw_since)
        return events + self._advance(now)

    def deadline(self) -> float | None:
        """When ``poll`` next has something to decide, or None while idle."""
        if self._raw != self._level:
            return self._raw_since + self.timing.debounce
        if not self._level or self._long_fired:
            return None
        t = self.timing
        if self._shown is None:
            return self._pressed_at + t.countdown_after
        return self._pressed_at + t.long_press - (self._shown - 1)

    def _transition(self, pressed: bool, at: float) -> list[ButtonEvent]:
        self._level = pressed
        if pressed:
            self._pressed_at = at
            self._shown = None
            self._long_fired = False
            self._horizon = at
            return [ButtonEvent(ButtonEventKind.DOWN, at)]
        if self._long_fired:
            return []
        held = at - self._pressed_at
        kind = (ButtonEventKind.CANCELLED if held + _EPS >= self.timing.countdown_after
                else ButtonEventKind.SHORT_PRESS)
        return [ButtonEvent(kind, at)]

    def _advance(self, until: float) -> list[ButtonEvent]:
        if until <= self._horizon:
            return []
        self._horizon = until
        if not self._level or self._long_fired:
            return []
        t = self.timing
        held = until - self._pressed_at
        if held + _EPS >= t.long_press:
            self._long_fired = True
            # min(): float rounding must not date an event after the moment that revealed it
            return [ButtonEvent(ButtonEventKind.LONG_PRESS, min(until, self._pressed_at + t.long_press))]
        if held + _EPS < t.countdown_after:
            return []
        left = max(1, math.ceil(t.long_press - held - _EPS))
        if left == self._shown:
            return []
        self._shown = left
        # Only the latest value is reported if polls came late: the display wants "now".
        began = min(until, self._pressed_at + max(t.countdown_after, t.long_press - left))
        return [ButtonEvent(ButtonEventKind.COUNTDOWN, began, seconds_left=left)]


class ButtonInput(Protocol):
    """Where edges come from. ``start`` is awaited on the loop that receives them."""

    async def start(self, sink: EdgeSink) -> None: ...

    async def aclose(self) -> None: ...


class Button:
    """A ``ButtonInput`` driving a ``ButtonStateMachine`` on the running loop.

    ``async with Button(source) as button: async for event in button: ...``
    """

    def __init__(self, source: ButtonInput, *, timing: ButtonTiming | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.machine = ButtonStateMachine(timing)
        self._source = source
        self._clock = clock
        self._queue: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Button:
        await self._source.start(self._on_edge)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._source.aclose()

    async def get(self) -> ButtonEvent:
        return await self._queue.get()

    def __aiter__(self) -> Button:
        return self

    async def __anext__(self) -> ButtonEvent:
        return await self.get()

    def _on_edge(self, pressed: bool, at: float) -> None:
        # Edges are delivered in order, but a GPIO timestamp taken on another thread may
        # trail a poll the loop already made; time must not run backwards for the machine.
        self._put(self.machine.feed(pressed, max(at, self.machine.now)))
        self._reschedule()

    def _on_timer(self) -> None:
        self._timer = None
        self._put(self.machine.poll(max(self._clock(), self.machine.now)))
        self._reschedule()

    def _put(self, events: list[ButtonEvent]) -> None:
        for event in events:
            self._queue.put_nowait(event)

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.machine.deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)


class GPIOButtonInput:
    """A push button between a GPIO pin (BCM numbering) and ground (``pull_up=True``) or 3V3.

    ``RPi.GPIO`` is imported when the input starts, so this module imports anywhere. On a
    Raspberry Pi 5, RPi.GPIO cannot reach the RP1 chip: install ``rpi-lgpio`` instead (not
    both; each provides the ``RPi.GPIO`` module), which does the same over
    ``/dev/gpiochip*``; the service user needs access to those (group ``gpio`` on
    Raspberry Pi OS), and ``RPI_LGPIO_CHIP`` overrides the chip number if needed.

    ``bouncetime`` (ms) is passed to the library only if given. The state machine does the
    real debouncing, and the libraries differ: RPi.GPIO drops edges within bouncetime of
    the previous one (it can drop the final release), lgpio reports an edge only after the
    level has been stable that long. Either way, ``resample_after`` seconds after the last
    edge the pin is read again, and again every ``resample_after`` while it reads pressed,
    so a release the library swallowed is still seen (and never becomes a long press).
    """

    def __init__(self, pin: int, *, pull_up: bool = True, bouncetime: int | None = None,
                 resample_after: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.pin = pin
        self.pull_up = pull_up
        self.bouncetime = bouncetime
        self.resample_after = resample_after
        self._clock = clock
        self._gpio: ModuleType | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: EdgeSink | None = None
        self._last: bool | None = None
        self._resample: asyncio.TimerHandle | None = None
        self._closed = False

    async def start(self, sink: EdgeSink) -> None:
        gpio = importlib.import_module("RPi.GPIO")
        self._gpio = gpio
        self._loop = asyncio.get_running_loop()
        self._sink = sink
        gpio.setmode(gpio.BCM)
        gpio.setup(self.pin, gpio.IN, pull_up_down=gpio.PUD_UP if self.pull_up else gpio.PUD_DOWN)
        # The level at start counts: a button held while the box boots starts a countdown.
        self._deliver(self._read(), self._clock())
        extra = {"bouncetime": self.bouncetime} if self.bouncetime else {}
        gpio.add_event_detect(self.pin, gpio.BOTH, callback=self._on_gpio_edge, **extra)

    async def aclose(self) -> None:
        self._closed = True
        if self._resample is not None:
            self._resample.cancel()
        if self._gpio is not None:
            self._gpio.remove_event_detect(self.pin)
            self._gpio.cleanup(self.pin)
            self._gpio = None

    def _read(self, gpio: ModuleType | None = None) -> bool:
        gpio = gpio or self._gpio
        assert gpio is not None
        high = bool(gpio.input(self.pin))
        return not high if self.pull_up else high

    def _on_gpio_edge(self, channel: int) -> None:
        """Runs on RPi.GPIO's callback thread: sample now, hand over to the loop."""
        # Local copies: aclose() on the loop thread may clear the attributes meanwhile.
        gpio, loop = self._gpio, self._loop
        if self._closed or gpio is None or loop is None:
            return
        pressed, at = self._read(gpio), self._clock()
        with contextlib.suppress(RuntimeError):  # the loop closed while the thread ran
            loop.call_soon_threadsafe(self._deliver, pressed, at)

    def _deliver(self, pressed: bool, at: float) -> None:
        if self._closed or self._sink is None or self._loop is None:
            return
        if pressed != self._last:
            self._last = pressed
            self._sink(pressed, at)
        if self._resample is not None:
            self._resample.cancel()
        self._resample = self._loop.call_later(self.resample_after, self._on_resample)

    def _on_resample(self) -> None:
        self._resample = None
        if self._closed or self._gpio is None or self._sink is None or self._loop is None:
            return
        pressed = self._read()
        if pressed != self._last:
            log.debug("GPIO %d: level changed without an edge callback; resampled", self.pin)
            self._last = pressed
            self._sink(pressed, self._clock())
        if pressed:
            # While held, keep reading: a lost release would otherwise run on into a
            # LONG_PRESS nobody made. A lost press only costs a press, so no polling idle.
            self._resample = self._loop.call_later(self.resample_after, self._on_resample)


def parse_sim_command(line: str, *, press_hold: float = 0.15,
                      long_hold: float = 6.0) -> list[tuple[float, bool]]:
    """One text command as (delay in seconds, pressed) steps; empty for blank/# lines.

    ``down``/``up`` set the level, ``press`` (or ``short``) is a short press, ``long``
    a press held ``long_hold`` s, ``hold SECONDS`` a press of that length.
    """
    words = line.split("#", 1)[0].split()
    if not words:
        return []
    verb, args = words[0].lower(), words[1:]
    if verb in ("down", "up") and not args:
        return [(0.0, verb == "down")]
    if verb in ("press", "short") and not args:
        return [(0.0, True), (press_hold, False)]
    if verb == "long" and not args:
        return [(0.0, True), (long_hold, False)]
    if verb == "hold" and len(args) == 1:
        try:
            seconds = float(args[0])
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            return [(0.0, True), (seconds, False)]
    raise ValueError(f"unknown button command {line.strip()!r} (use: press, long, down, up, hold SECONDS)")


class SimulatedButtonInput:
    """Button commands, one per line, from a FIFO (``echo press > PATH``) or a Unix
    stream socket (``echo long | socat - UNIX-CONNECT:PATH``), for ``sim`` and tests.

    A new command cancels the steps still pending from the previous one (a ``down`` during
    ``long`` holds the button until ``up``). ``command()`` takes a line directly, e.g.
    from a key handler in a terminal front end.
    """

    _MAX_LINE = 4096

    def __init__(self, path: Path, *, transport: Literal["fifo", "socket"] = "fifo",
                 press_hold: float = 0.15, long_hold: float = 6.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.transport = transport
        self.press_hold = press_hold
        self.long_hold = long_hold
        self._clock = clock
        self._sink: EdgeSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[asyncio.TimerHandle] = []
        self._fd: int | None = None
        self._made_fifo = False
        self._buffer = b""
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self, sink: EdgeSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        if self.transport == "fifo":
            self._open_fifo()
        else:
            if self.path.exists() and stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()  # left by a previous run that was killed
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def aclose(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._fd is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            if self._made_fifo:
                self.path.unlink(missing_ok=True)
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.close()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)
        self._sink = None

    def command(self, line: str) -> None:
        """Act on one command line; a bad line is logged and ignored."""
        try:
            steps = parse_sim_command(line, press_hold=self.press_hold, long_hold=self.long_hold)
        except ValueError as exc:
            log.warning("%s", exc)
            return
        if not steps or self._loop is None:
            return
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for delay, pressed in steps:
            if delay <= 0:
                self._emit(pressed)
            else:
                self._pending.append(self._loop.call_later(delay, self._emit, pressed))

    def _emit(self, pressed: bool) -> None:
        if self._sink is not None:
            self._sink(pressed, self._clock())

    def _open_fifo(self) -> None:
        assert self._loop is not None
        if not self.path.exists():
            os.mkfifo(self.path, 0o660)
            self._made_fifo = True
        elif not stat.S_ISFIFO(self.path.stat().st_mode):
            raise ValueError(f"{self.path} exists and is not a FIFO")
        # Opened read-write: holding a writer ourselves means the FIFO never reports
        # end-of-file when a writer (`echo press > fifo`) closes, so we need not reopen.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self._loop.add_reader(self._fd, self._on_fifo_readable)

    def _on_fifo_readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self._MAX_LINE:
            log.warning("button FIFO: dropping an over-long line")
            self._buffer = b""
        for raw in lines:
            self.command(raw.decode("utf-8", "replace"))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while line := await reader.readline():
                self.command(line.decode("utf-8", "replace"))
        except (ConnectionError, ValueError) as exc:  # ValueError: a line over the reader's limit
            log.warning("button socket client: %s", exc)
        finally:
            self._clients.discard(writer)
            writer.close()
