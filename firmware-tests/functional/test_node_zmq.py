"""appliance.node.zmq_sub against a real regtest bitcoind's ZMQ publishers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from decimal import Decimal
from typing import Any

import pytest
import zmq

from appliance.chain.encoding import hash_to_hex_str
from appliance.config import load_config
from appliance.node import (
    Notification,
    SequenceEvent,
    SequenceLabel,
    ZMQSubscriber,
    parse_sequence,
)
from functional.framework.node import NodeFactory, TestNode
from functional.framework.util import free_port

pytestmark = pytest.mark.node



def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


async def drain(sub: ZMQSubscriber, quiet: float) -> list[Notification]:
    """Everything that arrives until nothing has for ``quiet`` seconds."""
    out: list[Notification] = []
    while True:
        try:
            out.append(await asyncio.wait_for(anext(sub), quiet))
        except TimeoutError:
            return out


async def collect(sub: ZMQSubscriber, done: Any, timeout: float) -> list[Notification]:
    """Notifications until ``done(list)`` is true; fails after ``timeout`` seconds."""
    out: list[Notification] = []
    async with asyncio.timeout(timeout):
        while not done(out):
            out.append(await anext(sub))
    return out


async def wait_live(sub: ZMQSubscriber, node: TestNode, factor: float) -> list[Notification]:
    """Mine until every subscribed topic has delivered: ZMQ drops what is published
    before a subscription reaches bitcoind (slow joiner). Then drain to a clean slate;
    returns everything received."""
    topics = {t for ts in sub.endpoints.values() for t in ts}
    notes: list[Notification] = []
    address = node.new_address()
    deadline = time.monotonic() + 30 * factor
    while {n.topic for n in notes} != topics:
        assert time.monotonic() < deadline, f"ZMQ never delivered {topics}"
        node.mine(1, address)  # every block yields rawblock, hashblock, sequence, rawtx
        notes += await drain(sub, 0.2 * factor)
    node.syncwithvalidationinterfacequeue()  # everything for those blocks is published
    return notes + await drain(sub, 0.2 * factor)


def sequence_events(notes: list[Notification]) -> list[SequenceEvent]:
    return [parse_sequence(n.body) for n in notes if n.topic == "sequence"]


def test_block_and_tx_notifications_match_the_node(node: TestNode, timeout_factor: float
                                                   ) -> None:
    async def main() -> None:
        async with ZMQSubscriber(node.zmq) as sub:
            await wait_live(sub, node, timeout_factor)
            # A transaction: rawtx carries it (with witness), sequence says "A".
            txid = node.send(node.new_address(), Decimal("0.5"))
            notes = await collect(sub, lambda ns: {n.topic for n in ns} >= {"rawtx", "sequence"},
                                  10 * timeout_factor)
            raw = next(n for n in notes if n.topic == "rawtx")
            assert raw.body.hex() == node.getrawtransaction(txid)
            added = sequence_events(notes)[0]
            assert (added.hash_hex, added.label) == (txid, SequenceLabel.TX_ADDED)
            mempool = node.getrawmempool(False, True)
            assert added.mempool_seq == mempool["mempool_sequence"] - 1
            assert all(n.gap == 0 and not n.resync for n in notes)

            # A block: hashblock and rawblock name it, sequence says "C", rawtx again
            # for each of its transactions (coinbase and ours).
            [block_hash] = node.mine(1)
            want = {"rawblock", "hashblock", "sequence"}
            notes = await collect(
                sub, lambda ns: {n.topic for n in ns} >= want
                and sum(n.topic == "rawtx" for n in ns) >= 2, 10 * timeout_factor)
            by_topic = {n.topic: n for n in notes}
            assert by_topic["hashblock"].body.hex() == block_hash
            rawblock = by_topic["rawblock"].body
            assert hash_to_hex_str(sha256d(rawblock[:80])) == block_hash
            assert rawblock.hex() == node.getblock(block_hash, 0)
            assert sequence_events(notes) == [
                SequenceEvent(block_hash, SequenceLabel.BLOCK_CONNECTED)]
            block_txs = {tx["hex"] for tx in node.getblock(block_hash, 2)["tx"]}
            assert len(block_txs) == 2
            assert {n.body.hex() for n in notes if n.topic == "rawtx"} == block_txs
            # Per-topic sequence numbers advance by one per message.
            assert by_topic["hashblock"].seq == by_topic["rawblock"].seq
            assert sub.stats.missed == {} and sub.stats.restarts == 0

    asyncio.run(main())


def test_sequence_reports_disconnect_on_reorg(node: TestNode, timeout_factor: float) -> None:
    async def main() -> None:
        async with ZMQSubscriber({"sequence": node.zmq["sequence"]}) as sub:
            await wait_live(sub, node, timeout_factor)
            old_tip = node.getbestblockhash()
            new_blocks = node.reorg(1)  # invalidate the tip, mine two replacements

            def blocks_seen(ns: list[Notification]) -> bool:
                return sum(e.label == SequenceLabel.BLOCK_CONNECTED
                           for e in sequence_events(ns)) >= 2

            events = sequence_events(await collect(sub, blocks_seen, 10 * timeout_factor))
            blocks = [e for e in events if e.mempool_seq is None]
            assert blocks == [
                SequenceEvent(old_tip, SequenceLabel.BLOCK_DISCONNECTED),
                *(SequenceEvent(h, SequenceLabel.BLOCK_CONNECTED) for h in new_blocks),
            ]

    asyncio.run(main())


def test_topics_sharing_an_endpoint_share_a_socket(node_factory: NodeFactory,
                                                   timeout_factor: float) -> None:
    node = node_factory.create(start=False)
    shared = f"tcp://127.0.0.1:{free_port()}"
    node.zmq = {"hashblock": shared, "rawblock": shared}
    node.start()
    node.ensure_wallet()

    async def main() -> None:
        async with ZMQSubscriber(node.zmq) as sub:
            assert sub.endpoints == {shared: ("hashblock", "rawblock")}
            await wait_live(sub, node, timeout_factor)
            [block_hash] = node.mine(1)
            notes = await collect(sub, lambda ns: len(ns) >= 2, 10 * timeout_factor)
            assert sorted(n.topic for n in notes) == ["hashblock", "rawblock"]
            assert all(hash_to_hex_str(sha256d(n.body[:80])) == block_hash
                       for n in notes if n.topic == "rawblock")

    asyncio.run(main())


def test_missed_messages_are_reported_as_a_gap(node: TestNode, timeout_factor: float,
                                               caplog: pytest.LogCaptureFixture) -> None:
    # Overflowing a queue for real needs megabytes on loopback (kernel socket buffers
    # absorb a 500-block burst even with RCVHWM=1 at both ends). Instead make bitcoind
    # skip this subscriber for a while: with the subscription withdrawn, the publisher
    # (and the local SUB filter) drop the next blocks' messages, exactly as lost
    # messages, while the connection stays up. This reaches into the one socket.
    async def main() -> int:
        async with ZMQSubscriber({"hashblock": node.zmq["hashblock"]}) as sub:
            seen = await wait_live(sub, node, timeout_factor)
            last = seen[-1]
            assert last.body.hex() == node.getbestblockhash()
            last_height = node.getblockcount()
            [(sock, _endpoint, _topics)] = sub._sockets
            sock.setsockopt(zmq.UNSUBSCRIBE, b"hashblock")
            node.mine(5)
            node.syncwithvalidationinterfacequeue()  # all five published (and dropped)
            await asyncio.sleep(0.2 * timeout_factor)  # ... and any in flight arrived
            sock.setsockopt(zmq.SUBSCRIBE, b"hashblock")
            # Mine until the subscription is back at bitcoind; blocks mined before
            # that are lost too, and must be counted in the gap.
            deadline = time.monotonic() + 30 * timeout_factor
            notes: list[Notification] = []
            while not notes:
                assert time.monotonic() < deadline, "no hashblock after resubscribing"
                node.mine(1)
                notes = await drain(sub, 0.2 * timeout_factor)
            note = notes[0]
            height = node.getblockheader(note.body.hex())["height"]
            missed: int = height - last_height - 1
            assert missed >= 5
            assert (note.seq, note.gap, note.resync) == (last.seq + missed + 1, missed, False)
            assert sub.stats.missed == {"hashblock": missed}
            assert all(n.gap == 0 for n in notes[1:])
            # The next message is continuous again.
            node.mine(1)
            [note] = await collect(sub, lambda ns: len(ns) >= 1, 10 * timeout_factor)
            assert (note.gap, note.resync) == (0, False)
            return missed

    with caplog.at_level(logging.WARNING, logger="appliance.node.zmq_sub"):
        missed = asyncio.run(main())
    assert any(f"missed {missed} messages" in r.getMessage() for r in caplog.records)


def test_bitcoind_restart_is_a_resync_not_a_gap(node: TestNode, timeout_factor: float) -> None:
    async def main() -> None:
        endpoints = {t: node.zmq[t] for t in ("hashblock", "sequence")}
        async with ZMQSubscriber(endpoints) as sub:
            await wait_live(sub, node, timeout_factor)
            # Push the counters well past what the restarted bitcoind will have sent by
            # the time we reconnect, so the restart shows as numbers going backwards.
            node.mine(20)
            node.syncwithvalidationinterfacequeue()
            notes = await drain(sub, 0.3 * timeout_factor)
            before = [n.seq for n in notes if n.topic == "hashblock"][-1]
            node.stop()
            node.start()
            node.ensure_wallet()
            address = node.new_address()
            first: Notification | None = None
            markers = 0
            deadline = time.monotonic() + 30 * timeout_factor
            while first is None:
                assert time.monotonic() < deadline, "no notification after restart"
                [block_hash] = node.mine(1, address)
                notes = await drain(sub, 0.3 * timeout_factor)
                # The reconnect itself is announced at once by a data-less marker.
                markers += sum(1 for n in notes if n.seq == -1 and n.resync and not n.body)
                hashes = [n for n in notes if n.topic == "hashblock" and n.seq >= 0]
                if hashes:
                    first = hashes[0]
            assert markers >= 1
            assert first.seq < before
            assert first.resync and first.gap == 0
            assert sub.stats.restarts >= 1 and sub.stats.disconnects >= 2
            assert sub.stats.missed == {}
            # And it keeps receiving, continuously, afterwards.
            [block_hash] = node.mine(1, address)
            notes = await collect(sub, lambda ns: any(n.topic == "hashblock" for n in ns),
                                  10 * timeout_factor)
            note = next(n for n in notes if n.topic == "hashblock")
            assert note.body.hex() == block_hash
            assert (note.gap, note.resync) == (0, False)

    asyncio.run(main())


def test_close_ends_iteration_cleanly(node: TestNode) -> None:
    async def main() -> None:
        sub = ZMQSubscriber(node.zmq)
        received: list[Notification] = []

        async def consume() -> None:
            async for n in sub:
                received.append(n)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        sub.close()  # from another task: the pending ``async for`` just ends
        await asyncio.wait_for(task, 5)
        sub.close()  # idempotent
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        # Cancelling a consumer, then closing, is the other shutdown order.
        sub2 = ZMQSubscriber(node.zmq)

        async def one() -> Notification:
            return await anext(sub2)

        pending = asyncio.create_task(one())
        await asyncio.sleep(0.1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        sub2.close()

    asyncio.run(main())
    # Never iterated, closed outside any event loop: still no warnings.
    ZMQSubscriber(node.zmq).close()


def test_next_with_a_timeout_says_quiet_then_delivers(node: TestNode,
                                                     timeout_factor: float) -> None:
    """``next(timeout)``: None after a quiet ``timeout`` (the follower's cue to ask
    bitcoind for its tip), nothing lost across it; None once closed."""
    async def main() -> None:
        sub = ZMQSubscriber(node.zmq)
        await wait_live(sub, node, timeout_factor)
        assert await sub.next(0.2) is None and not sub.closed
        (block_hash,) = node.mine(1)
        got = await collect_next(sub, "hashblock", 30 * timeout_factor)
        assert got.body.hex() == block_hash
        sub.close()
        assert await sub.next(0.2) is None and sub.closed

    async def collect_next(sub: ZMQSubscriber, topic: str, timeout: float) -> Notification:
        async with asyncio.timeout(timeout):
            while True:
                note = await sub.next(0.05)  # many quiet timeouts in between
                if note is not None and note.topic == topic:
                    return note

    asyncio.run(main())


def test_from_config(node: TestNode, timeout_factor: float) -> None:
    cfg = load_config(None, env={}, overrides={"node": {
        f"zmq_{t}": ep for t, ep in node.zmq.items()}})

    async def main() -> None:
        async with ZMQSubscriber.from_config(cfg, ["hashblock"]) as sub:
            assert sub.endpoints == {node.zmq["hashblock"]: ("hashblock",)}
            await wait_live(sub, node, timeout_factor)

    asyncio.run(main())


def test_parse_sequence_rejects_malformed_bodies() -> None:
    h = bytes(range(32))
    assert parse_sequence(h + b"C") == SequenceEvent(h.hex(), SequenceLabel.BLOCK_CONNECTED)
    event = parse_sequence(h + b"R" + (7).to_bytes(8, "little"))
    assert (event.label, event.mempool_seq) == (SequenceLabel.TX_REMOVED, 7)
    for bad in (h, h + b"X", h + b"A", h + b"C" + bytes(8), h + b"A" + bytes(4)):
        with pytest.raises(ValueError):
            parse_sequence(bad)
