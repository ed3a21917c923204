"""The indexer's ZMQ reader (event-loop callbacks, batched) against a real bitcoind.

The subscriber tests of ``test_node_zmq.py`` run again with :class:`LoopSubscriber`
in place of :class:`ZMQSubscriber` (same notifications, sequence tracking, missed
messages as a gap, reorg and restart handling, ``next(timeout)``), plus what is its
own: a burst arrives complete and in order across batches, closing stops reading and
ends a waiting reader, reading pauses while the consumer is behind, and a trickle is
read a batch at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import zmq

import functional.test_node_zmq as base
from appliance.indexer.zmq_reader import LoopSubscriber
from appliance.node import Notification, SequenceLabel, parse_sequence
from functional.framework.node import TestNode
from functional.framework.util import free_port

__all__: list[str] = []

pytestmark = pytest.mark.node


@pytest.fixture(autouse=True)
def _threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "ZMQSubscriber", LoopSubscriber)


test_block_and_tx_notifications_match_the_node = \
    base.test_block_and_tx_notifications_match_the_node
test_sequence_reports_disconnect_on_reorg = base.test_sequence_reports_disconnect_on_reorg
test_topics_sharing_an_endpoint_share_a_socket = \
    base.test_topics_sharing_an_endpoint_share_a_socket
test_bitcoind_restart_is_a_resync_not_a_gap = base.test_bitcoind_restart_is_a_resync_not_a_gap
test_next_with_a_timeout_says_quiet_then_delivers = \
    base.test_next_with_a_timeout_says_quiet_then_delivers


class _Exposed(LoopSubscriber):
    """The base gap test reaches into the subscriber's one socket as ``_sockets``."""

    @property
    def _sockets(self) -> list[tuple[zmq.Socket[bytes], str, frozenset[str]]]:  # type: ignore[override]
        return self._data


def test_missed_messages_are_reported_as_a_gap(node: TestNode, timeout_factor: float,
                                               caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Lost messages are counted as the gap the follower resyncs on, across batches."""
    monkeypatch.setattr(base, "ZMQSubscriber", _Exposed)
    base.test_missed_messages_are_reported_as_a_gap(node, timeout_factor, caplog)


def _readers() -> list[int]:
    """File descriptors the running loop watches (the subscriber's sockets among them)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    return [key.fd for key in selector.get_map().values()]


def test_a_burst_arrives_complete_and_in_order(node: TestNode, timeout_factor: float) -> None:
    """200 transactions sent without a pause: every "A" event, in bitcoind's mempool
    order, each with its rawtx, no gap; then close() stops watching the sockets."""
    node.ensure_wallet()
    node.mine(101 + 1)
    address = node.new_address()

    async def main() -> None:
        watched = set(_readers())
        sub = LoopSubscriber({t: node.zmq[t] for t in ("rawtx", "sequence")})
        try:
            await base.wait_live(sub, node, timeout_factor)
            await base.drain(sub, 0.3 * timeout_factor)
            txids = [node.rpc("sendtoaddress", address, 0.001) for _ in range(200)]
            node.syncwithvalidationinterfacequeue()

            def complete(ns: list[Notification]) -> bool:
                return sum(1 for n in ns if n.topic == "sequence"
                           and parse_sequence(n.body).label == SequenceLabel.TX_ADDED) >= 200

            notes = await base.collect(sub, complete, 30 * timeout_factor)
            added = [parse_sequence(n.body) for n in notes if n.topic == "sequence"]
            added = [e for e in added if e.label == SequenceLabel.TX_ADDED]
            assert [e.hash_hex for e in added] == txids
            seqs = [e.mempool_seq for e in added]
            assert seqs == sorted(seqs)
            assert all(n.gap == 0 and not n.resync for n in notes)
            raw = {n.body for n in notes if n.topic == "rawtx"}
            assert len(raw) == 200
            assert sub.stats.missed == {}
            # Two data sockets and their two monitors, read on this loop: no thread.
            assert len(set(_readers()) - watched) == 4
            assert not [t for t in threading.enumerate() if t.name == "zmq-reader"]

            # close() from another task ends a waiting next() and stops reading.
            waiting = asyncio.create_task(sub.next())
            await asyncio.sleep(0.1)
            sub.close()
            assert await asyncio.wait_for(waiting, 5) is None
            assert set(_readers()) == watched
            sub.close()  # idempotent
        finally:
            sub.close()

    asyncio.run(main())


def test_reading_pauses_while_the_loop_is_behind(node: TestNode, timeout_factor: float,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With few notifications allowed to wait, reading stops (bitcoind's and the
    socket's queues hold the rest); once taken, all arrive, in order, no gap."""
    import appliance.indexer.zmq_reader as reader

    monkeypatch.setattr(reader, "_MAX_QUEUED", 4)

    async def main() -> None:
        async with LoopSubscriber({"hashblock": node.zmq["hashblock"]}) as sub:
            await base.wait_live(sub, node, timeout_factor)
            await base.drain(sub, 0.3 * timeout_factor)
            hashes = node.mine(30)
            node.syncwithvalidationinterfacequeue()
            await asyncio.sleep(0.5 * timeout_factor)  # the loop reads nothing meanwhile
            assert isinstance(sub, LoopSubscriber)
            waiting = len(sub._pending)
            assert 0 < waiting <= 2 * 4, waiting
            notes = await base.collect(sub, lambda ns: len(ns) >= 30, 30 * timeout_factor)
            assert [n.body.hex() for n in notes] == hashes
            assert all(n.gap == 0 and not n.resync for n in notes)

    asyncio.run(main())


def test_a_steady_trickle_goes_over_in_batches() -> None:
    """Messages 5 ms apart (a burst as bitcoind accepts it) are read several at a time,
    not one read (one wake-up) each, all of them, in order; the wait between reads grows
    to its cap while the burst lasts and is back at its start after it; a lone message
    after the burst is read when it comes, not by a burst's timed read."""
    import appliance.indexer.zmq_reader as reader

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    count = 200

    async def main() -> tuple[int, list[int], set[float]]:
        sub = LoopSubscriber({"rawtx": endpoint})
        handoffs = timed = 0
        read_all, resume = sub._read_all, sub._resume

        def counted() -> int:
            nonlocal handoffs
            handoffs += 1
            return read_all()

        def timed_read() -> None:
            nonlocal timed
            timed += 1
            resume()
        sub._read_all = counted  # type: ignore[method-assign]
        sub._resume = timed_read  # type: ignore[method-assign]
        try:
            # Subscriptions propagate asynchronously: publish until one arrives.
            while await sub.next(timeout=0.05) is None:
                pub.send_multipart([b"rawtx", b"hello", (0).to_bytes(4, "little")])
            await asyncio.sleep(0.2)
            while await sub.next(timeout=0.1) is not None:
                pass
            handoffs = 0

            def publish() -> None:
                for i in range(1, count + 1):
                    pub.send_multipart([b"rawtx", i.to_bytes(4, "big"),
                                        i.to_bytes(4, "little")])
                    time.sleep(0.005)
            sender = threading.Thread(target=publish)
            sender.start()
            got: list[int] = []
            waits: set[float] = set()
            while len(got) < count:
                note = await sub.next(timeout=10)
                assert note is not None, f"{len(got)} of {count} arrived"
                got.append(int.from_bytes(note.body, "big"))
                waits.add(sub._linger)
            sender.join()
            assert await sub.next(timeout=0.5) is None  # the burst is over ...
            assert sub._watching and sub._linger == reader._LINGER_S  # ... and so is its wait
            timed = 0
            pub.send_multipart([b"rawtx", b"lone", (count + 1).to_bytes(4, "little")])
            note = await sub.next(timeout=10)
            assert note is not None and note.body == b"lone"
            assert timed == 0  # read when it came
            return handoffs, got, waits
        finally:
            sub.close()

    try:
        handoffs, got, waits = asyncio.run(main())
    finally:
        pub.close(linger=0)
        ctx.term()
    assert got == list(range(1, count + 1))
    assert handoffs <= count // 4, handoffs  # one wake-up per message without the wait
    assert max(waits) == reader._LINGER_MAX_S, waits
