"""The chain follower with a fake bitcoind, for what a real one cannot be made to do on
cue: ZMQ messages of two sockets in either order, a lost message (a gap), the chain
changing between two RPC calls of a catch-up, a bitcoind that stops answering. Every
reorg shape bitcoind can produce is tested against a real one (functional/
test_chain_follower.py)."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

from appliance.chain import Tx, double_sha256, parse_tx
from appliance.chain.encoding import hash_to_hex_str
from appliance.chain.tx import TxIn, TxOut, serialize_tx
from appliance.node import NodeUnavailable, Notification, RPCError
from appliance.node.follower import BlockRef, ChainFollower, ConnectedBlock, ListenerPaused


def make_tx(n_outputs: int = 2) -> Tx:
    inputs = [TxIn(os.urandom(32), 0, b"", 0xFFFFFFFD, [os.urandom(72), os.urandom(33)])]
    outputs = [TxOut(10_000 + i, b"\x00\x14" + os.urandom(20)) for i in range(n_outputs)]
    return parse_tx(serialize_tx(2, inputs, outputs, 0))


def header(prev: bytes, salt: int) -> bytes:
    return struct.pack("<i32s32sIII", 4, prev, os.urandom(32), 1_700_000_000 + salt,
                       0x207FFFFF, salt)


class FakeNode:
    """Headers only (the listener needs no blocks), a mempool, and a switch to go down."""

    def __init__(self, length: int) -> None:
        self.headers: list[bytes] = []
        self.known: dict[str, bytes] = {}  # stale blocks' headers too, as bitcoind keeps them
        self.extend(length)
        self.mempool: dict[str, bytes] = {}
        self.down = False
        self.calls: list[str] = []
        self.on_call: dict[str, Any] = {}  # method -> a callback run once, before answering

    def extend(self, n: int, salt: int = 0) -> None:
        for _ in range(n):
            prev = double_sha256(self.headers[-1]) if self.headers else bytes(32)
            self.headers.append(header(prev, len(self.headers) + salt))
            self.known[self.hash_hex(len(self.headers) - 1)] = self.headers[-1]

    def hash_hex(self, height: int) -> str:
        return hash_to_hex_str(double_sha256(self.headers[height]))

    async def call(self, method: str, *params: Any, **_kw: Any) -> Any:
        self.calls.append(method)
        if method in self.on_call:
            self.on_call.pop(method)()
        if self.down:
            raise NodeUnavailable("connection refused")
        return self._answer(method, list(params))

    async def batch(self, calls: list[tuple[str, list[Any]]], **_kw: Any) -> list[Any]:
        if self.down:
            raise NodeUnavailable("connection refused")
        out: list[Any] = []
        for method, params in calls:
            try:
                out.append(self._answer(method, list(params)))
            except RPCError as exc:
                out.append(exc)
        return out

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method == "getblockcount":
            return len(self.headers) - 1
        if method == "getbestblockhash":
            return self.hash_hex(len(self.headers) - 1)
        if method == "getblockhash":
            if not 0 <= params[0] < len(self.headers):
                raise RPCError(-8, "Block height out of range", method)
            return self.hash_hex(params[0])
        if method == "getblockheader":
            if params[0] not in self.known:
                raise RPCError(-5, "Block not found", method)
            return self.known[params[0]].hex()
        if method == "getrawmempool":
            return list(self.mempool)
        if method == "getrawtransaction":
            return self.mempool[params[0]].hex()
        raise AssertionError(f"unexpected RPC {method}")


class FakeSub:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Notification | None] = asyncio.Queue()
        self.closed = False

    async def next(self, timeout: float | None = None) -> Notification | None:
        try:
            note = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        self.closed = note is None
        return note

    def send(self, topic: str, body: bytes, gap: int = 0) -> None:
        self.queue.put_nowait(Notification(topic, body, 0, gap))


class Listener:
    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.added: list[bytes] = []
        self.removed: list[bytes] = []
        self.resyncs = 0
        self.in_step = False
        self.lost_errors: list[str] = []
        self.refuse = False  # its store cannot write (a full disk): every change refused
        self.refused = 0

    def _write(self) -> None:
        if self.refuse:
            self.refused += 1
            raise ListenerPaused("disk is full")

    def chain_tip(self) -> BlockRef | None:
        return BlockRef(len(self.hashes) - 1, self.hashes[-1]) if self.hashes else None

    async def start_fresh(self, node_height: int) -> None:
        pass

    def needs_blocks(self) -> bool:
        return False

    async def wants_pruned(self, block_hash: bytes) -> bool:
        return False

    async def block_connected(self, block: ConnectedBlock) -> None:
        assert block.block is None and block.height == len(self.hashes)
        self._write()
        self.hashes.append(block.header.hash)

    async def block_disconnected(self, tip: BlockRef) -> bool:
        self._write()
        self.hashes.pop()
        return True

    async def tx_added(self, tx: Tx) -> None:
        self.added.append(tx.txid)

    async def tx_removed(self, txid: bytes) -> None:
        self.removed.append(txid)

    async def mempool_resync(self, txs: AsyncIterator[Tx]) -> None:
        self.resyncs += 1
        async for tx in txs:
            self.added.append(tx.txid)

    async def caught_up(self) -> None:
        self.in_step = True

    def lost(self, error: str) -> None:
        self.in_step = False
        self.lost_errors.append(error)


def sequence(txid: bytes, label: str) -> bytes:
    return txid[::-1] + label.encode() + (bytes(8) if label in "AR" else b"")


class Harness:
    def __init__(self, length: int = 5, poll_s: float = 600.0) -> None:
        self.node = FakeNode(length)
        self.sub = FakeSub()
        self.listener = Listener()
        self.follower = ChainFollower(self.node, self.sub, self.listener,  # type: ignore[arg-type]
                                      poll_s=poll_s)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.follower.run())
        await until(lambda: self.listener.in_step)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sub.queue.put_nowait(None)
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def at_tip(self) -> bool:
        return self.listener.hashes == [double_sha256(h) for h in self.node.headers]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def run(coro: Any) -> None:
    asyncio.run(coro)


def txs(n: int) -> Iterator[Tx]:
    for _ in range(n):
        yield make_tx()


def test_a_transaction_announced_before_its_body_is_added_when_the_body_comes() -> None:
    async def scenario() -> None:
        async with Harness() as h:
            early, late, gone = txs(3)
            h.sub.send("sequence", sequence(early.txid, "A"))  # "A" first: rawtx is late
            h.sub.send("rawtx", late.raw)  # body first, then "A"
            h.sub.send("sequence", sequence(late.txid, "A"))
            h.sub.send("sequence", sequence(gone.txid, "A"))
            h.sub.send("sequence", sequence(gone.txid, "R"))  # replaced before its body
            h.sub.send("rawtx", gone.raw)
            h.sub.send("rawtx", early.raw)
            await until(lambda: len(h.listener.added) == 2)
            await asyncio.sleep(0.05)
            assert h.listener.added == [late.txid, early.txid]
            assert h.listener.removed == [gone.txid]
    run(scenario())


def test_a_gap_rereads_blocks_and_mempool() -> None:
    async def scenario() -> None:
        async with Harness() as h:
            tx = next(txs(1))
            h.node.mempool[hash_to_hex_str(tx.txid)] = tx.raw
            h.node.extend(2)
            h.sub.send("sequence", sequence(tx.txid, "A"), gap=7)  # 7 messages lost
            await until(lambda: h.listener.resyncs == 2 and h.at_tip())
            assert h.listener.added == [tx.txid]  # from getrawmempool, not the "A"
            assert h.follower.stats.resyncs == 2
    run(scenario())


def test_disconnect_of_a_block_that_is_not_our_tip_costs_nothing() -> None:
    async def scenario() -> None:
        async with Harness() as h:
            before = len(h.node.calls)
            h.sub.send("sequence", os.urandom(32) + b"D")
            h.sub.send("sequence", double_sha256(h.node.headers[-1])[::-1] + b"C")
            await asyncio.sleep(0.05)
            assert len(h.node.calls) == before and h.follower.stats.resyncs == 1
    run(scenario())


def test_chain_replaced_between_two_calls_of_a_catch_up() -> None:
    """bitcoind reorgs while the follower reads the hashes of the blocks to connect: the
    header it then reads does not extend the tip, and the catch-up starts again."""
    async def scenario() -> None:
        node = FakeNode(8)
        h = Harness()
        h.node = node
        h.follower.rpc = node  # type: ignore[assignment]

        def reorg() -> None:
            del node.headers[4:]
            node.extend(6, salt=100)
        node.on_call["getblockheader"] = reorg  # at the first block read
        async with h:
            assert h.at_tip() and h.follower.stats.resyncs == 1
            assert h.follower.stats.rolled_back == 4  # the stale 4..7 it had connected
    run(scenario())


def test_bitcoind_down_means_out_of_step_until_it_answers_again() -> None:
    async def scenario() -> None:
        async with Harness(poll_s=0.01) as h:
            h.node.down = True
            await until(lambda: not h.listener.in_step)
            assert "connection refused" in h.listener.lost_errors[-1]
            del h.node.headers[3:]  # back, behind us and on another branch
            h.node.extend(1, salt=50)
            h.node.down = False
            await until(lambda: h.listener.in_step and h.at_tip())
            assert h.follower.stats.rolled_back == 2
    run(scenario())


def test_a_listener_that_cannot_write_pauses_the_follower_until_it_can() -> None:
    async def scenario() -> None:
        async with Harness(poll_s=0.01) as h:
            h.listener.refuse = True
            h.node.extend(2)
            await until(lambda: h.listener.refused >= 2 and not h.listener.in_step)
            assert "disk is full" in h.follower.stats.last_error
            assert len(h.listener.hashes) == 5  # the blocks before, none half-taken
            del h.node.headers[3:]  # a reorg while paused: the undo is refused too
            h.node.extend(3, salt=70)
            refused = h.listener.refused
            await until(lambda: h.listener.refused > refused + 1)
            h.listener.refuse = False
            await until(lambda: h.listener.in_step and h.at_tip(), timeout=15)
            assert h.follower.stats.rolled_back == 2 and h.follower.stats.last_error == ""
    run(scenario())


def test_rawtx_bodies_waiting_for_their_announcement_are_bounded() -> None:
    async def scenario() -> None:
        async with Harness() as h:
            big = [make_tx(n_outputs=2000) for _ in range(100)]
            for tx in big:  # block transactions: a rawtx and never an "A"
                h.sub.send("rawtx", tx.raw)
            await until(lambda: h.sub.queue.empty())
            await asyncio.sleep(0.05)
            kept = sum(len(t.raw) for t in h.follower._bodies.values())
            assert kept <= 4_000_000 < sum(len(t.raw) for t in big)
            h.sub.send("sequence", sequence(big[-1].txid, "A"))  # the newest is still there
            await until(lambda: h.listener.added == [big[-1].txid])
    run(scenario())
