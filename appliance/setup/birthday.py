"""A wallet's birthday as a person gives it (a date) turned into a block height.

Block times are not monotonic, but each block's median time past is: the first block
whose median time is at least a day before the date is early enough for any wallet made
on that date (the day of slack covers time zones and miners' clocks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

__all__ = ["SLACK_S", "height_for_date"]

SLACK_S = 86400

#: height -> that block's median time past (unix seconds)
MedianTime = Callable[[int], Awaitable[int]]


async def height_for_date(day: dt.date, tip: int, median_time: MedianTime) -> int:
    """The first height whose median time is at or after ``day`` (UTC) minus a day;
    ``tip + 1`` (nothing to scan) when the chain has no such block yet."""
    target = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) - SLACK_S
    lo, hi = 0, tip + 1  # invariant: answer in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if await median_time(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo
