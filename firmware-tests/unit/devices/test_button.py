"""appliance.devices.button: the state machine, a reference model under hypothesis, and the
two input seams (a real FIFO and Unix socket; RPi.GPIO swapped for a fake module whose
callbacks run on their own thread, as RPi.GPIO's do)."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.devices.button import (
    Button,
    ButtonEvent,
    ButtonEventKind,
    ButtonStateMachine,
    ButtonTiming,
    GPIOButtonInput,
    SimulatedButtonInput,
    parse_sim_command,
)

K = ButtonEventKind
TERMINAL = {K.SHORT_PRESS, K.LONG_PRESS, K.CANCELLED}


def run(coro: Coroutine[Any, Any, None], timeout: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


def kinds(events: list[ButtonEvent]) -> list[ButtonEventKind]:
    return [e.kind for e in events]


def drive(machine: ButtonStateMachine, script: Sequence[tuple[float, bool | None]], until: float,
          step: float = 0.01) -> list[ButtonEvent]:
    """Feed (time, level) edges (level None = a poll) and poll every ``step`` up to ``until``."""
    events: list[ButtonEvent] = []
    pending = sorted(((round(at, 6), level) for at, level in script), key=lambda item: item[0])
    t = 0.0
    while t <= until + 1e-12:
        while pending and pending[0][0] <= t + 1e-12:
            at, level = pending.pop(0)
            events += machine.poll(at) if level is None else machine.feed(level, at)
        events += machine.poll(t)
        t = round(t + step, 6)
    return events


# --------------------------------------------------------------------------- state machine

def test_short_press() -> None:
    m = ButtonStateMachine()
    events = drive(m, [(0.10, True), (0.30, False)], until=1.0)
    assert kinds(events) == [K.DOWN, K.SHORT_PRESS]
    assert events[0].at == pytest.approx(0.10) and events[1].at == pytest.approx(0.30)


def test_chatter_is_debounced_into_one_press() -> None:
    m = ButtonStateMachine()
    chatter_down = [(0.100 + 0.002 * i, i % 2 == 0) for i in range(9)]  # ends pressed at 0.116
    chatter_up = [(0.400 + 0.002 * i, i % 2 == 1) for i in range(9)]  # ends released at 0.416
    events = drive(m, chatter_down + chatter_up, until=1.0, step=0.001)
    assert kinds(events) == [K.DOWN, K.SHORT_PRESS]
    # timed from the edge that began each stable level, not shifted by the debounce
    assert events[0].at == pytest.approx(0.116) and events[1].at == pytest.approx(0.416)


def test_glitch_shorter_than_debounce_is_ignored() -> None:
    m = ButtonStateMachine()
    assert drive(m, [(0.1, True), (0.12, False)], until=1.0, step=0.001) == []


def test_long_press_counts_down_then_fires_while_held() -> None:
    m = ButtonStateMachine()
    events = drive(m, [(0.0, True), (7.0, False)], until=8.0, step=0.05)
    assert kinds(events) == [K.DOWN] + [K.COUNTDOWN] * 4 + [K.LONG_PRESS]
    assert [e.seconds_left for e in events[1:5]] == [4, 3, 2, 1]
    assert [e.at for e in events[1:]] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])


def test_release_during_countdown_cancels() -> None:
    m = ButtonStateMachine()
    events = drive(m, [(0.0, True), (2.5, False)], until=4.0)
    assert kinds(events) == [K.DOWN, K.COUNTDOWN, K.COUNTDOWN, K.CANCELLED]
    assert K.SHORT_PRESS not in kinds(events) and K.LONG_PRESS not in kinds(events)


def test_press_during_release_bounce_continues_the_press() -> None:
    """A release that bounces back within the debounce time was never a release."""
    m = ButtonStateMachine()
    script = [(0.0, True), (0.5, False), (0.505, True), (0.51, False), (0.52, True), (6.0, False)]
    events = drive(m, script, until=7.0, step=0.001)
    assert kinds(events) == [K.DOWN] + [K.COUNTDOWN] * 4 + [K.LONG_PRESS]


def test_second_press_after_the_release_settled_counts() -> None:
    m = ButtonStateMachine()
    script = [(0.0, True), (0.2, False), (0.24, True), (0.4, False)]  # 40 ms apart > 30 ms
    assert kinds(drive(m, script, until=1.0, step=0.001)) == [K.DOWN, K.SHORT_PRESS, K.DOWN, K.SHORT_PRESS]


def test_late_polls_report_only_the_current_countdown() -> None:
    m = ButtonStateMachine()
    m.feed(True, 0.0)
    m.poll(0.05)
    events = m.poll(3.5)
    assert kinds(events) == [K.COUNTDOWN] and events[0].seconds_left == 2
    assert kinds(m.poll(9.0)) == [K.LONG_PRESS]


def test_deadlines_tell_the_driver_when_to_poll() -> None:
    m = ButtonStateMachine(ButtonTiming(debounce=0.03, long_press=5.0, countdown_after=1.0))
    assert m.deadline() is None
    m.feed(True, 10.0)
    assert m.deadline() == pytest.approx(10.03)
    m.poll(10.03)
    assert m.deadline() == pytest.approx(11.0)
    m.poll(11.0)
    assert m.deadline() == pytest.approx(12.0)
    for t in (12.0, 13.0, 14.0):
        m.poll(t)
    assert m.deadline() == pytest.approx(15.0)
    assert kinds(m.poll(15.0)) == [K.LONG_PRESS]
    assert m.deadline() is None


def test_time_must_not_run_backwards() -> None:
    m = ButtonStateMachine()
    m.poll(5.0)
    with pytest.raises(ValueError, match="backwards"):
        m.feed(True, 4.0)


def test_timing_is_validated() -> None:
    with pytest.raises(ValueError):
        ButtonTiming(long_press=1.0, countdown_after=1.0)
    with pytest.raises(ValueError):
        ButtonTiming(debounce=1.5)


# --------------------------------------------------------------------------- reference model

DEB, CD, LONG = 30, 1000, 5000  # ms


def reference(edges: list[tuple[int, bool]], end: int) -> list[tuple[ButtonEventKind, int]]:
    """DOWN / outcome per press, straight from the definition, in integer milliseconds."""
    runs: list[tuple[int, bool]] = []
    raw = False
    for t, level in edges:
        if level != raw:
            runs.append((t, level))
            raw = level
    level = False
    starts: list[int] = []  # debounced press i began at starts[i] ...
    stops: list[int | None] = []  # ... and was released at stops[i] (None: still held)
    pending_from: int | None = None
    for i, (start, run_level) in enumerate(runs):
        stop = runs[i + 1][0] if i + 1 < len(runs) else end
        if run_level != level:
            if stop - start >= DEB:
                level = run_level
                if level:
                    starts.append(start)
                    stops.append(None)
                else:
                    stops[-1] = start
            elif i + 1 == len(runs):
                pending_from = start  # an unconfirmed change: timers wait at its start
    out: list[tuple[ButtonEventKind, int]] = []
    for start, released in zip(starts, stops, strict=True):
        out.append((K.DOWN, start))
        if released is None:
            horizon = pending_from if pending_from is not None else end
            if horizon - start >= LONG:
                out.append((K.LONG_PRESS, start + LONG))
        elif released - start >= LONG:
            out.append((K.LONG_PRESS, start + LONG))
        else:
            out.append((K.CANCELLED if released - start >= CD else K.SHORT_PRESS, released))
    return out


steps = st.lists(
    st.tuples(st.one_of(st.integers(0, 40), st.integers(0, 3000)), st.booleans(), st.booleans()),
    max_size=40)


@settings(max_examples=400, deadline=None)
@given(steps, st.integers(0, 7000))
def test_state_machine_matches_the_reference(script: list[tuple[int, bool, bool]], tail: int) -> None:
    timing = ButtonTiming(debounce=DEB / 1000, long_press=LONG / 1000, countdown_after=CD / 1000)
    m = ButtonStateMachine(timing)
    t, edges, events = 0, [], []
    for gap, level, is_poll in script:
        t += gap
        if is_poll:
            events += m.poll(t / 1000)
        else:
            edges.append((t, level))
            events += m.feed(level, t / 1000)
    end = t + tail
    events += m.poll(end / 1000)

    main = [(e.kind, round(e.at * 1000)) for e in events if e.kind is not K.COUNTDOWN]
    assert main == reference(edges, end)
    for kind in sorted({e.kind.value for e in events}):
        hypothesis.event(f"saw {kind}")

    # Per press: never two outcomes (so never SHORT and LONG), countdown strictly down,
    # countdowns only between DOWN and the outcome, none before a SHORT_PRESS.
    assert all(a.at <= b.at for a, b in zip(events, events[1:], strict=False))
    press: list[ButtonEvent] = []
    for event in events + [ButtonEvent(K.DOWN, math.inf)]:
        if event.kind is K.DOWN and press:
            outcomes = [e for e in press if e.kind in TERMINAL]
            assert len(outcomes) <= 1
            counts = [e.seconds_left or 0 for e in press if e.kind is K.COUNTDOWN]
            assert counts == sorted(set(counts), reverse=True)
            assert all(1 <= c <= 4 for c in counts)
            if outcomes:
                assert press[-1] is outcomes[0]
                if outcomes[0].kind is K.SHORT_PRESS:
                    assert counts == []
            press = []
        press.append(event)


# --------------------------------------------------------------------------- simulated input

def test_sim_commands_parse() -> None:
    assert parse_sim_command("down") == [(0.0, True)]
    assert parse_sim_command("  UP  ") == [(0.0, False)]
    assert parse_sim_command("press", press_hold=0.2) == [(0.0, True), (0.2, False)]
    assert parse_sim_command("long", long_hold=6.5) == [(0.0, True), (6.5, False)]
    assert parse_sim_command("hold 2.5 # countdown then cancel") == [(0.0, True), (2.5, False)]
    assert parse_sim_command("") == [] and parse_sim_command("# nothing") == []
    for bad in ("jump", "hold", "hold -1", "hold nan", "down now"):
        with pytest.raises(ValueError, match="unknown button command"):
            parse_sim_command(bad)


FAST = ButtonTiming(debounce=0.03, long_press=1.6, countdown_after=0.4)


async def _events(button: Button, count: int, timeout: float = 5.0) -> list[ButtonEvent]:
    return [await asyncio.wait_for(button.get(), timeout) for _ in range(count)]


async def _quiet(button: Button, seconds: float) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(button.get(), seconds)


def test_simulated_input_through_a_real_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "button.fifo"

    async def echo(command: str) -> None:
        # the way a person (or ./build.sh sim) drives it: a shell writing one line
        proc = await asyncio.create_subprocess_exec("sh", "-c", 'echo "$1" > "$2"', "sh", command, str(fifo))
        assert await proc.wait() == 0

    async def body() -> None:
        source = SimulatedButtonInput(fifo, press_hold=0.1, long_hold=2.0)
        async with Button(source, timing=FAST) as button:
            assert fifo.is_fifo()
            await echo("press")
            assert kinds(await _events(button, 2)) == [K.DOWN, K.SHORT_PRESS]
            await echo("hold 0.9")
            got = await _events(button, 4)
            assert kinds(got) == [K.DOWN, K.COUNTDOWN, K.COUNTDOWN, K.CANCELLED]
            assert [e.seconds_left for e in got[1:3]] == [2, 1]
            await echo("nonsense")  # logged and ignored
            await echo("long")
            got = await _events(button, 4)
            assert kinds(got) == [K.DOWN, K.COUNTDOWN, K.COUNTDOWN, K.LONG_PRESS]
            assert got[3].at - got[0].at == pytest.approx(1.6)
            await _quiet(button, 0.6)  # the release after LONG_PRESS adds nothing
        assert not fifo.exists(), "the FIFO it made is removed on close"

    run(body())


def test_simulated_input_through_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "button.sock"

    async def body() -> None:
        source = SimulatedButtonInput(path, transport="socket", press_hold=0.1)
        async with Button(source, timing=FAST) as button:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"press\n")
            await writer.drain()
            assert kinds(await _events(button, 2)) == [K.DOWN, K.SHORT_PRESS]
            writer.write(b"down\n")
            await writer.drain()
            assert kinds(await _events(button, 1)) == [K.DOWN]
            await asyncio.sleep(0.1)
            writer.write(b"up\n")
            await writer.drain()
            assert kinds(await _events(button, 1)) == [K.SHORT_PRESS]
            writer.close()
            await writer.wait_closed()
        assert not path.exists()

    run(body())


# --------------------------------------------------------------------------- GPIO seam

class FakeGPIO(types.ModuleType):
    """RPi.GPIO's interface over a variable; ``drive`` runs a script on its own thread and
    calls the edge callback there, as RPi.GPIO's event thread does."""

    BCM, BOARD, IN, OUT, PUD_UP, PUD_DOWN, BOTH = 11, 10, 1, 0, 22, 21, 33

    def __init__(self, level: int = 1) -> None:
        super().__init__("RPi.GPIO")
        self.level = level
        self.mode: int | None = None
        self.setup_args: tuple[int, int, int] | None = None
        self.detect: tuple[int, int, dict[str, Any]] | None = None
        self.callback: Callable[[int], None] | None = None
        self.cleaned: list[int] = []
        self.callback_threads: set[int] = set()

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setup(self, pin: int, direction: int, pull_up_down: int) -> None:
        self.setup_args = (pin, direction, pull_up_down)

    def add_event_detect(self, pin: int, edge: int, callback: Callable[[int], None], **kwargs: Any) -> None:
        self.detect = (pin, edge, kwargs)
        self.callback = callback

    def remove_event_detect(self, pin: int) -> None:
        self.callback = None

    def input(self, pin: int) -> int:
        return self.level

    def cleanup(self, pin: int) -> None:
        self.cleaned.append(pin)

    def drive(self, script: list[tuple[float, int, bool]]) -> threading.Thread:
        """(delay, level, notify): notify=False models an edge the library swallowed."""
        def body() -> None:
            for delay, level, notify in script:
                time.sleep(delay)
                self.level = level
                callback = self.callback
                if notify and callback is not None:
                    self.callback_threads.add(threading.get_ident())
                    callback(17)

        thread = threading.Thread(target=body, name="fake-gpio-events")
        thread.start()
        return thread


@pytest.fixture
def gpio(monkeypatch: pytest.MonkeyPatch) -> FakeGPIO:
    fake = FakeGPIO()
    package = types.ModuleType("RPi")
    package.GPIO = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", fake)
    return fake


def _bouncy(level: int, bounces: int = 6) -> list[tuple[float, int, bool]]:
    """Contact bounce: alternate every 2 ms, ending on ``level``."""
    return [(0.002, level if (bounces - i) % 2 else 1 - level, True) for i in range(bounces)] + [
        (0.002, level, True)]


def test_gpio_edges_cross_from_the_callback_thread_to_the_loop(gpio: FakeGPIO) -> None:
    calls: list[tuple[bool, float, int]] = []

    async def body() -> None:
        loop_thread = threading.get_ident()
        source = GPIOButtonInput(17)
        await source.start(lambda pressed, at: calls.append((pressed, at, threading.get_ident())))
        assert gpio.mode == gpio.BCM and gpio.setup_args == (17, gpio.IN, gpio.PUD_UP)
        assert gpio.detect == (17, gpio.BOTH, {})  # no library debounce unless asked
        thread = gpio.drive(_bouncy(0) + [(0.1, 1, True)])
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.05)
        await source.aclose()
        assert gpio.cleaned == [17]
        assert gpio.callback_threads and loop_thread not in gpio.callback_threads
        assert {ident for _, _, ident in calls} == {loop_thread}
        # initial level first (released), then only real changes, ending released
        assert calls[0][0] is False and calls[-1][0] is False
        assert all(a[0] != b[0] for a, b in zip(calls, calls[1:], strict=False))
        assert all(a[1] <= b[1] for a, b in zip(calls, calls[1:], strict=False))

    run(body())


def test_gpio_bouncy_short_press(gpio: FakeGPIO) -> None:
    async def body() -> None:
        async with Button(GPIOButtonInput(17), timing=FAST) as button:
            thread = gpio.drive(_bouncy(0) + [(0.15, 1, True)] + _bouncy(1)[1:])
            got = await _events(button, 2)
            assert kinds(got) == [K.DOWN, K.SHORT_PRESS]
            assert 0.1 < got[1].at - got[0].at < FAST.countdown_after
            await asyncio.to_thread(thread.join)
            await _quiet(button, 0.3)

    run(body())


def test_gpio_long_press_with_countdown(gpio: FakeGPIO) -> None:
    async def body() -> None:
        async with Button(GPIOButtonInput(17), timing=FAST) as button:
            thread = gpio.drive([(0.01, 0, True), (2.0, 1, True)])
            got = await _events(button, 4)
            assert kinds(got) == [K.DOWN, K.COUNTDOWN, K.COUNTDOWN, K.LONG_PRESS]
            assert [e.seconds_left for e in got[1:3]] == [2, 1]
            await asyncio.to_thread(thread.join)
            await _quiet(button, 0.2)

    run(body())


@pytest.mark.parametrize("script", [
    # RPi.GPIO's bouncetime swallows the last bounce of the release: the pin ends high
    # with the last callback having read it low.
    [(0.01, 0, True), (0.1, 1, True), (0.002, 0, True), (0.002, 1, False)],
    # No callback at all for the release: a held button is re-read until it lets go, so
    # a lost edge can never turn into a phantom LONG_PRESS (a pairing reset).
    [(0.01, 0, True), (0.1, 1, False)],
], ids=["bounce-swallowed", "edge-lost"])
def test_gpio_swallowed_release_is_found_by_resampling(gpio: FakeGPIO,
                                                       script: list[tuple[float, int, bool]]) -> None:
    async def body() -> None:
        async with Button(GPIOButtonInput(17, bouncetime=5, resample_after=0.05), timing=FAST) as button:
            assert gpio.detect == (17, gpio.BOTH, {"bouncetime": 5})
            thread = gpio.drive(script)
            assert kinds(await _events(button, 2)) == [K.DOWN, K.SHORT_PRESS]
            await asyncio.to_thread(thread.join)
            await _quiet(button, 0.2)

    run(body())


def test_gpio_button_held_at_start_counts(gpio: FakeGPIO) -> None:
    gpio.level = 0  # held while the service starts

    async def body() -> None:
        async with Button(GPIOButtonInput(17), timing=FAST) as button:
            assert kinds(await _events(button, 4)) == [K.DOWN, K.COUNTDOWN, K.COUNTDOWN, K.LONG_PRESS]

    run(body())


def test_gpio_pull_down_wiring_and_close(gpio: FakeGPIO) -> None:
    gpio.level = 0

    async def body() -> None:
        source = GPIOButtonInput(27, pull_up=False)
        async with Button(source, timing=FAST) as button:
            assert gpio.setup_args == (27, gpio.IN, gpio.PUD_DOWN)
            thread = gpio.drive([(0.01, 1, True), (0.1, 0, True)])  # high = pressed
            assert kinds(await _events(button, 2)) == [K.DOWN, K.SHORT_PRESS]
            await asyncio.to_thread(thread.join)
            callback = gpio.callback
        assert gpio.callback is None and gpio.cleaned == [27]
        assert callback is not None
        callback(27)  # a late callback from the library thread after close is dropped
        await asyncio.sleep(0.05)

    run(body())


def test_button_module_imports_without_rpi_gpio() -> None:
    assert "RPi.GPIO" not in sys.modules or isinstance(sys.modules["RPi.GPIO"], FakeGPIO)

    async def body() -> None:
        with pytest.raises(ModuleNotFoundError):
            await GPIOButtonInput(17).start(lambda pressed, at: None)

    run(body())
