"""What the supervisor listener knows of supervisord's programs; pure bookkeeping, no I/O.

:class:`SupervisionTracker` takes :class:`~.protocol.ProcessStateEvent` s (with the time
they were seen), keeps each program's state, counts restarts and FATALs, decides when a
program restarts so often that it should be stopped (flood control), and summarises it
all as a status-bus snapshot (:class:`Summary`). The caller performs the stops it asks
for and publishes the summary; tests drive it with a fake clock.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from ..status.schema import MAX_COUNTERS, Phase
from .protocol import ProcessStateEvent

__all__ = [
    "DEFAULT_FLOOD_RESTARTS",
    "DEFAULT_FLOOD_WINDOW_S",
    "ProgramState",
    "Summary",
    "SupervisionTracker",
    "counter_suffix",
]

#: More restarts than this within the window and the program is stopped.
DEFAULT_FLOOD_RESTARTS = 5
#: The flood-control window, seconds.
DEFAULT_FLOOD_WINDOW_S = 300.0

# supervisord's states in which a process exists (or is about to): counted as "running"
# for the detail line only when RUNNING proper.
_DIED = ("BACKOFF", "EXITED")
_ALIVE = ("STARTING", "RUNNING")
# The documented counters come first (docs/status-bus.md); per-program ones fill the rest.
_GLOBAL_COUNTERS = ("programs", "running", "fatal", "backoff", "fatal_total", "flood_stopped")


@dataclass
class ProgramState:
    name: str  # namespec: "group" or "group:process"
    state: str = "UNKNOWN"
    restarts: int = 0  # times it died and supervisord had to start it again
    fatal: bool = False
    tries: int = 0  # start attempts in the current BACKOFF run (for the FATAL message)
    recent: deque[float] = field(default_factory=deque)  # times of deaths in the window
    # Flood control: "" (no), "stopping" (asked supervisord, not STOPPED yet), "stopped".
    flood: str = ""
    flood_count: int = 0  # deaths in the window when it was stopped


@dataclass(frozen=True)
class Summary:
    """One snapshot for the status bus."""

    phase: Phase
    detail: str
    counters: dict[str, int]
    last_error: str | None


def counter_suffix(name: str) -> str:
    """A program name as part of a counter name: ``hearth-indexer`` -> ``hearth_indexer``."""
    text = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "program"
    return text if text[0].isalpha() else "p_" + text


class SupervisionTracker:
    """Program states, restart counts and flood control, from PROCESS_STATE events.

    A *restart* is a program entering BACKOFF (it died before ``startsecs``) or EXITED
    (it died later): either way supervisord starts it again (every Hearth program has
    ``autorestart=true``). More than ``flood_restarts`` of them within
    ``flood_window_s`` seconds and :meth:`apply` returns the program's name to stop:
    a crash loop would otherwise fill the SD card with logs and wear it out.
    """

    def __init__(self, *, flood_restarts: int = DEFAULT_FLOOD_RESTARTS,
                 flood_window_s: float = DEFAULT_FLOOD_WINDOW_S, ignore: str | None = None) -> None:
        if flood_restarts < 1 or not flood_window_s > 0:
            raise ValueError("flood_restarts must be >= 1 and flood_window_s > 0")
        self.flood_restarts = flood_restarts
        self.flood_window_s = flood_window_s
        self.ignore = ignore  # the listener's own name: its own events say nothing new
        self.programs: dict[str, ProgramState] = {}
        self.fatal_total = 0
        self.last_error: str | None = None
        self._events: list[tuple[str, str]] = []

    # --- input -------------------------------------------------------------------------
    def seed(self, name: str, state: str) -> None:
        """A program's state from ``getAllProcessInfo`` at start; events seen already win."""
        if name == self.ignore or name in self.programs:
            return
        self.programs[name] = ProgramState(name, state=state, fatal=state == "FATAL")

    def apply(self, ev: ProcessStateEvent, now: float) -> list[str]:
        """Take one event seen at monotonic time ``now``; returns programs to stop."""
        name = ev.namespec
        if name == self.ignore or ev.process == self.ignore:
            return []
        p = self.programs.setdefault(name, ProgramState(name))
        p.state = ev.state
        stop: list[str] = []
        if ev.state in _DIED:
            p.restarts += 1
            if ev.tries is not None:
                p.tries = ev.tries
            p.recent.append(now)
            while p.recent and p.recent[0] <= now - self.flood_window_s:
                p.recent.popleft()
            if not p.flood and len(p.recent) > self.flood_restarts:
                p.flood, p.flood_count = "stopping", len(p.recent)
                self.last_error = f"{name} {self._flood_text(p)}"
                self._events.append(("program_flood_stopped", name))
            if p.flood == "stopping":
                stop.append(name)
        elif ev.state in _ALIVE:
            p.fatal = False
            if p.flood == "stopping":
                stop.append(name)  # our stop raced with its restart: ask again
            elif p.flood == "stopped":
                # Someone started it by hand after we stopped it: a fresh chance.
                p.flood, p.flood_count = "", 0
                p.recent.clear()
            if ev.state == "RUNNING":
                p.tries = 0
        elif ev.state == "STOPPED":
            if p.flood == "stopping":
                p.flood = "stopped"
        elif ev.state == "FATAL":
            p.fatal = True
            self.fatal_total += 1
            # supervisord gave up by itself: FATAL is the clearer report than our stop.
            p.flood, p.flood_count = "", 0
            retries = f" ({p.tries} retries)" if p.tries else ""
            self.last_error = f"{name} entered FATAL: exited too quickly{retries}"
            self._events.append(("program_fatal", name))
        return stop

    def take_events(self) -> list[tuple[str, str]]:
        """``(kind, detail)`` one-shot events since the last call."""
        events, self._events = self._events, []
        return events

    # --- output ------------------------------------------------------------------------
    def summary(self) -> Summary:
        progs = sorted(self.programs.values(), key=lambda p: p.name)
        fatal = [p for p in progs if p.fatal]
        flooded = [p for p in progs if p.flood]
        running = sum(p.state == "RUNNING" for p in progs)
        counters: dict[str, int] = {
            "programs": len(progs), "running": running, "fatal": len(fatal),
            "backoff": sum(p.state == "BACKOFF" for p in progs), "fatal_total": self.fatal_total,
            "flood_stopped": len(flooded),
        }
        # Two per program while they fit the schema's limit; a box has about six.
        for p in progs:
            if len(counters) + 2 > MAX_COUNTERS:
                break
            suffix = counter_suffix(p.name)[:38]
            counters[f"restarts_{suffix}"] = p.restarts
            counters[f"fatal_{suffix}"] = int(p.fatal)
        problems = [f"{p.name} FATAL" for p in fatal]
        problems += [f"{p.name} {self._flood_text(p)}" for p in flooded]
        if problems:
            # All of them: the OLED shows this line, and the publisher clips it to fit.
            detail = f"{', '.join(problems)}; {running} of {len(progs)} programs running"
            return Summary(Phase.DEGRADED, detail, counters, self.last_error)
        return Summary(Phase.READY, f"{running} of {len(progs)} programs running", counters,
                       self.last_error)

    def _flood_text(self, p: ProgramState) -> str:
        return f"stopped after {p.flood_count} restarts in {self.flood_window_s:g} s"
