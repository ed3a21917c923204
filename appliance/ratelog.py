"""A log line that a flood cannot repeat: at most ``burst`` lines per ``interval``.

A scan or an attack makes the same event thousands of times a minute (a refused
handshake, a refused connection); logging each would rewrite supervisord's rotated log
files within a minute and bury everything else. The lines past the budget are counted,
and the count is logged once when the next interval begins. The exact totals belong on
the status bus as counters, not in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Log one kind of event (``what``, e.g. "refused handshakes") at a bounded rate."""

    def __init__(self, logger: logging.Logger, what: str, *, burst: int = 5,
                 interval: float = 60.0, level: int = logging.INFO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._what = what
        self._burst = burst
        self._interval = interval
        self._level = level
        self._clock = clock
        self._start = clock()
        self._logged = 0
        self.suppressed = 0

    def __call__(self, msg: str, *args: object) -> None:
        now = self._clock()
        if now - self._start >= self._interval:
            if self.suppressed:
                self._logger.log(self._level, "%d more %s in the last %.0f s (not logged)",
                                 self.suppressed, self._what, now - self._start)
            self._start, self._logged, self.suppressed = now, 0, 0
        if self._logged < self._burst:
            self._logged += 1
            self._logger.log(self._level, msg, *args)
        else:
            self.suppressed += 1
