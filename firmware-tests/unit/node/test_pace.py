"""A paced loop lets a request through in one yield, not one hop per yield."""

from __future__ import annotations

import asyncio

from appliance.node.pace import Pacer

HOPS = 3  # socket data -> session -> the request's task (the Electrum server's path)


def test_a_request_of_several_hops_is_served_within_one_yield() -> None:
    async def main() -> int:
        pacer = Pacer(budget=0.0)  # yield at every tick: count yields, not time
        served_at: list[int] = []

        async def request() -> None:
            for _ in range(HOPS):  # each hop scheduled by the one before
                await asyncio.sleep(0)
            served_at.append(pacer.yields)

        task = asyncio.get_running_loop().create_task(request())
        while not served_at and pacer.yields < 10:
            await pacer.tick()  # the long indexing job
        await task
        return served_at[0]

    assert asyncio.run(main()) <= 1
