"""Give the event loop back during long steps, so clients keep being answered.

A wallet's go-live, a big block or a mempool burst can each take seconds of Python on a
Pi. ``Pacer.tick()`` is cheap to call per item: it yields (``asyncio.sleep(0)``) only
once ``budget`` seconds have passed since the last yield, so short steps stay atomic
and long ones never hold the loop longer than about the budget.
"""

from __future__ import annotations

import asyncio
import time

from ..chain import Block, parse_block

__all__ = ["ASIDE_BYTES", "STEP_BUDGET", "Pacer", "parse_block_aside"]

#: Longest stretch of indexing work between two chances for clients to be served.
STEP_BUDGET = 0.010
#: Loop turns given at each yield. A client's request takes a few turns (the socket's
#: data, its session, its request's task, each scheduled by the one before): with one
#: turn per yield it moved one hop per budget, and a ping waited 4 budgets (50-70 ms
#: while a 10,000-script wallet was added). An idle turn costs microseconds.
YIELD_TURNS = 4


class Pacer:
    __slots__ = ("budget", "_since", "yields")

    def __init__(self, budget: float = STEP_BUDGET) -> None:
        self.budget = budget
        self._since = time.perf_counter()
        self.yields = 0

    async def tick(self) -> None:
        now = time.perf_counter()
        if now - self._since >= self.budget:
            for _ in range(YIELD_TURNS):
                await asyncio.sleep(0)
            self.yields += 1
            self._since = time.perf_counter()


#: Blocks smaller than this are parsed in place (~1 ms per 100 transactions here):
#: a thread hand-off costs more than it saves, and the GIL ping-pong slows a backfill.
ASIDE_BYTES = 256 << 10


async def parse_block_aside(raw: bytes) -> Block:
    """Parse a big block in a worker thread: a 3,000-transaction block is ~100 ms of
    Python, and the interpreter hands the event loop its turn every few ms meanwhile."""
    if len(raw) < ASIDE_BYTES:
        return parse_block(raw)
    return await asyncio.to_thread(parse_block, raw)
