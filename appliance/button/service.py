"""The ``button`` service: one button, two jobs.

Short press: open the pairing window (5 minutes). Long press (>= 5 s, with a countdown
on the display that releasing cancels): revoke every pairing and reopen the window.
Both go to the usb service first, which takes them while the recovery phrase is shown
(short) or a stick's update question is up (short: install, long: no).
Presses come from GPIO (RPi.GPIO, or rpi-lgpio on a Pi 5) or, in sim and tests, from a
FIFO; the same state machine handles both. The countdown reaches the display through
the status bus (``counters.countdown``: seconds left, -1 when not counting).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import Config
from ..control import ControlError, Request, ask
from ..control.messages import PairingOpen, PairingReset, PhrasePress
from ..devices.button import (
    Button,
    ButtonEventKind,
    ButtonInput,
    ButtonTiming,
    GPIOButtonInput,
    SimulatedButtonInput,
)
from ..status import Phase, StatusPublisher

__all__ = ["main"]

log = logging.getLogger("button")


def _command(cfg: Config, request: Request[Any]) -> str:
    """'' once the indexer did it, else why not (shown as the button's last error)."""
    try:
        ask(cfg.control_endpoint("indexer"), request, timeout=10)
        return ""
    except ControlError as exc:
        return str(exc)


def _phrase_press(cfg: Config, long: bool = False) -> bool:
    """True if the usb service took the press: paging through the recovery phrase, or
    answering an update question (a long press: "no")."""
    try:
        return ask(cfg.control_endpoint("usb"), PhrasePress(long=long), timeout=5).consumed
    except ControlError:
        return False  # no usb service: the press means what it always does


async def main(cfg: Config) -> None:
    bc = cfg.button
    source: ButtonInput
    if bc.simulate:
        source = SimulatedButtonInput(cfg.button_fifo, long_hold=bc.long_press_s + 1.0)
    else:
        source = GPIOButtonInput(bc.gpio_pin, pull_up=bc.pull_up)
    timing = ButtonTiming(long_press=bc.long_press_s)
    async with StatusPublisher(cfg.hearth.run_dir, "button") as bus, \
            Button(source, timing=timing) as button:
        bus.update(phase=Phase.READY, detail="idle", counters={"countdown": -1, "presses": 0})
        async for event in button:
            presses = int(bus.status.counters.get("presses", 0))
            if event.kind == ButtonEventKind.COUNTDOWN:
                bus.update(detail="hold to reset pairing",
                           counters={"countdown": event.seconds_left or 0})
            elif event.kind == ButtonEventKind.SHORT_PRESS and await asyncio.to_thread(
                    _phrase_press, cfg):
                log.info("short press: recovery phrase screen")
                bus.update(detail="recovery phrase", counters={"countdown": -1, "presses": presses + 1})
            elif event.kind == ButtonEventKind.SHORT_PRESS:
                error = await asyncio.to_thread(_command, cfg, PairingOpen())
                log.info("short press: pairing window %s", error or "open")
                bus.update(detail="pairing opened", last_error=error or None,
                           counters={"countdown": -1, "presses": presses + 1})
            elif event.kind == ButtonEventKind.LONG_PRESS and await asyncio.to_thread(
                    _phrase_press, cfg, True):
                log.info("long press: update question answered no")
                bus.update(detail="update declined", counters={"countdown": -1, "presses": presses + 1})
            elif event.kind == ButtonEventKind.LONG_PRESS:
                error = await asyncio.to_thread(_command, cfg, PairingReset())
                log.info("long press: pairing %s", error or "reset")
                bus.update(detail="pairing reset", last_error=error or None,
                           counters={"countdown": -1, "presses": presses + 1})
            elif event.kind == ButtonEventKind.CANCELLED:
                bus.update(detail="cancelled", counters={"countdown": -1})
