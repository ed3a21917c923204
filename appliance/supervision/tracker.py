"""What the supervisor listener knows of supervisord's programs; pure bookkeeping, no I/O.

:class:`SupervisionTracker` takes :class:`~.protocol.ProcessStateEvent` s (with the time
they were seen), keeps each program's state, counts restarts and FATALs, decides when a
program restarts so often that it should be paused (flood control), when a paused or
FATAL program is due to be started again (:meth:`SupervisionTracker.due`), and
summarises it all as a status-bus snapshot (:class:`Summary`). The caller performs the
stops and starts it asks for and publishes the summary; tests drive it with a fake clock.

Nothing is given up on for good: on an appliance nobody is there to type
``supervisorctl start``. supervisord's own retries (``startretries``, a second more
each time) are the short loop; once it says FATAL, or flood control pauses a program
that keeps dying after ``startsecs``, the program is started again after a delay that
doubles from ``retry_base_s`` up to ``retry_max_s`` and stays there, for ever. The delay
starts over once the program has stayed up for the flood window.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..status.schema import MAX_COUNTERS, Phase
from .protocol import ProcessStateEvent

__all__ = [
    "DEFAULT_FLOOD_RESTARTS",
    "DEFAULT_FLOOD_WINDOW_S",
    "DEFAULT_RETRY_BASE_S",
    "DEFAULT_RETRY_MAX_S",
    "ProgramState",
    "Summary",
    "SupervisionTracker",
    "counter_suffix",
]

#: More restarts than this within the window and the program is stopped.
DEFAULT_FLOOD_RESTARTS = 5
#: The flood-control window, seconds (also: up this long counts as recovered).
DEFAULT_FLOOD_WINDOW_S = 300.0
#: The first delay before a FATAL or paused program is started again; doubles each time...
DEFAULT_RETRY_BASE_S = 10.0
#: ... up to this, then stays there (a cause that goes away is noticed within this).
DEFAULT_RETRY_MAX_S = 300.0

# supervisord's states in which a process exists (or is about to): counted as "running"
# for the detail line only when RUNNING proper.
_DIED = ("BACKOFF", "EXITED")
_ALIVE = ("STARTING", "RUNNING")
# The documented counters come first (docs/status-bus.md); per-program ones fill the rest.
_GLOBAL_COUNTERS = ("programs", "running", "fatal", "backoff", "fatal_total", "flood_stopped",
                    "failing", "retries")


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
    retry_at: float | None = None  # when to start it again (FATAL or paused)
    delay_s: float = 0.0  # the last retry delay (0: none since it last recovered)
    retries: int = 0  # starts the listener asked for
    running_since: float | None = None
    error: str | None = None  # the last error line of its log

    @property
    def failing(self) -> bool:
        return self.fatal or bool(self.flood) or self.retry_at is not None


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
                 flood_window_s: float = DEFAULT_FLOOD_WINDOW_S,
                 retry_base_s: float = DEFAULT_RETRY_BASE_S,
                 retry_max_s: float = DEFAULT_RETRY_MAX_S,
                 ignore: str | Iterable[str] | None = None) -> None:
        if flood_restarts < 1 or not flood_window_s > 0:
            raise ValueError("flood_restarts must be >= 1 and flood_window_s > 0")
        if not 0 < retry_base_s <= retry_max_s:
            raise ValueError("retry delays must be 0 < retry_base_s <= retry_max_s")
        self.flood_restarts = flood_restarts
        self.flood_window_s = flood_window_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.retries_total = 0
        # The listener's own name (its own events say nothing new) and one-shot programs
        # it runs itself (the bitcoind repair, which exits when done).
        self.ignore = frozenset([ignore] if isinstance(ignore, str) else ignore or ())
        self.programs: dict[str, ProgramState] = {}
        self.fatal_total = 0
        self.last_error: str | None = None
        self.repairs = 0  # programs brought back by a repair (repair.py)
        self._events: list[tuple[str, str]] = []

    # --- input -------------------------------------------------------------------------
    def seed(self, name: str, state: str, now: float = 0.0, *, paused: bool = False) -> None:
        """A program's state from ``getAllProcessInfo`` at start; events seen already win.
        ``paused``: a listener before us paused it (it is STOPPED, but not for good)."""
        if name in self.ignore or name in self.programs:
            return
        p = self.programs[name] = ProgramState(name, state=state, fatal=state == "FATAL")
        if paused and state == "STOPPED":
            p.flood = "stopped"
        if p.fatal or p.flood:
            self._schedule(p, now)

    def paused(self) -> set[str]:
        """Programs flood control stopped and will start again (kept across our restarts)."""
        return {p.name for p in self.programs.values() if p.flood}

    def note_error(self, name: str, error: str | None) -> None:
        """The last error line of a program that died (read from its log)."""
        p = self.programs.get(name)
        if p is not None and error:
            p.error = error

    def note_repaired(self, name: str, what: str) -> None:
        """A repair brought ``name`` back: counted, and said until the next problem."""
        self.repairs += 1
        self.last_error = f"{name} repaired after a crash: {what}"
        p = self.programs.get(name)
        if p is not None:
            p.error = None

    def due(self, now: float) -> list[str]:
        """Programs whose retry delay is over: start them (the caller does)."""
        out = []
        for p in self.programs.values():
            if p.retry_at is not None and p.retry_at <= now and p.state in ("FATAL", "STOPPED"):
                p.retry_at = None
                p.retries += 1
                self.retries_total += 1
                out.append(p.name)
        return out

    def retry_later(self, name: str, now: float) -> None:
        """Starting it failed (supervisord busy, shutting down...): try again later."""
        p = self.programs.get(name)
        if p is not None and p.state in ("FATAL", "STOPPED") and p.retry_at is None:
            self._schedule(p, now)

    def _schedule(self, p: ProgramState, now: float) -> None:
        p.delay_s = min(self.retry_max_s, p.delay_s * 2 or self.retry_base_s)
        p.retry_at = now + p.delay_s

    def apply(self, ev: ProcessStateEvent, now: float) -> list[str]:
        """Take one event seen at monotonic time ``now``; returns programs to stop."""
        name = ev.namespec
        if name in self.ignore or ev.process in self.ignore:
            return []
        p = self.programs.setdefault(name, ProgramState(name))
        p.state = ev.state
        stop: list[str] = []
        if ev.state in _DIED or ev.state == "FATAL":
            if p.running_since is not None and now - p.running_since >= self.flood_window_s:
                p.delay_s = 0.0  # it had recovered: the next retry waits the base delay
            p.running_since = None
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
                # Started again (by us after the pause, or by hand): a fresh window.
                p.flood, p.flood_count = "", 0
                p.recent.clear()
            p.retry_at = None
            if ev.state == "RUNNING":
                p.tries = 0
                p.running_since = now
        elif ev.state == "STOPPED":
            if p.flood == "stopping":
                p.flood = "stopped"
                self._schedule(p, now)  # paused, not given up on
            else:
                p.retry_at = None  # stopped on purpose (operator, shutdown): leave it
        elif ev.state == "FATAL":
            p.fatal = True
            self.fatal_total += 1
            # supervisord gave up by itself: FATAL is the clearer report than our stop.
            p.flood, p.flood_count = "", 0
            retries = f" ({p.tries} retries)" if p.tries else ""
            self.last_error = f"{name} entered FATAL: exited too quickly{retries}"
            self._events.append(("program_fatal", name))
            self._schedule(p, now)
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
        failing = [p for p in progs if p.failing]
        counters: dict[str, int] = {
            "programs": len(progs), "running": running, "fatal": len(fatal),
            "backoff": sum(p.state == "BACKOFF" for p in progs), "fatal_total": self.fatal_total,
            "flood_stopped": len(flooded), "failing": len(failing), "retries": self.retries_total,
            "repairs": self.repairs,
        }
        # Two per program while they fit the schema's limit; a box has about nine.
        for p in progs:
            if len(counters) + 2 > MAX_COUNTERS:
                break
            suffix = counter_suffix(p.name)[:38]
            counters[f"restarts_{suffix}"] = p.restarts
            counters[f"fatal_{suffix}"] = int(p.fatal)
        problems = [self._problem(p) for p in failing]
        if problems:
            # All of them: the OLED shows this line, and the publisher clips it to fit.
            detail = f"{'; '.join(problems)}; {running} of {len(progs)} programs running"
            return Summary(Phase.DEGRADED, detail, counters, self.last_error)
        return Summary(Phase.READY, f"{running} of {len(progs)} programs running", counters,
                       self.last_error)

    def _problem(self, p: ProgramState) -> str:
        """``bitcoind FATAL, retry in 40 s: Error: Disk space is too low!``"""
        what = "FATAL" if p.fatal else self._flood_text(p) if p.flood else "failing"
        when = f", retry in {p.delay_s:g} s" if p.retry_at is not None else ", retrying"
        return f"{p.name} {what}{when}{f': {p.error}' if p.error else ''}"

    def _flood_text(self, p: ProgramState) -> str:
        return f"paused after {p.flood_count} restarts in {self.flood_window_s:g} s"
