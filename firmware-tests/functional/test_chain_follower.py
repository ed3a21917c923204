"""The one chain follower (appliance.node.follower) against a real regtest bitcoind.

A recording listener keeps its chain and mempool in memory, so every reorg shape
bitcoind can produce is checked once, here, for every consumer (the indexer and the
tower are listeners too): blocks and mempool, a rollback with no new block
(invalidateblock / reconsiderblock), preciousblock between equal-work branches, bitcoind
restarted behind the listener (a datadir snapshot: the blocks it had not flushed), a
listener that cannot undo that deep, and pruned blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from appliance.chain import Tx
from appliance.chain.encoding import hash_to_hex_str, hex_str_to_hash
from appliance.node import BitcoinRPC, ZMQSubscriber
from appliance.node.follower import FOLLOWER_TOPICS, BlockRef, ChainFollower, ConnectedBlock
from functional.framework.node import NodeFactory, TestNode
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


class Recorder:
    """A ChainListener that remembers everything; ``undo_floor``: blocks at or below it
    cannot be undone (like an undo record that is gone)."""

    def __init__(self, *, undo_floor: int = -1, want_pruned: set[bytes] | None = None) -> None:
        self.lock = threading.Lock()  # read from the test's thread
        self.hashes: list[bytes] = []
        self.mempool: set[bytes] = set()
        self.undo_floor = undo_floor
        self.want_pruned = want_pruned or set()
        self.asked_pruned: list[bytes] = []
        self.pruned: list[int] = []
        self.disconnected: list[int] = []
        self.in_step = False
        self.steps: list[tuple[int, bytes]] = []  # the tip at every caught_up
        self.errors: list[str] = []

    def tip(self) -> tuple[int, str]:
        with self.lock:
            return len(self.hashes) - 1, hash_to_hex_str(self.hashes[-1])

    def mempool_hex(self) -> set[str]:
        with self.lock:
            return {hash_to_hex_str(t) for t in self.mempool}

    # --- ChainListener ------------------------------------------------------------------
    def chain_tip(self) -> BlockRef | None:
        return BlockRef(len(self.hashes) - 1, self.hashes[-1]) if self.hashes else None

    async def start_fresh(self, node_height: int) -> None:
        pass  # from genesis

    def needs_blocks(self) -> bool:
        return True

    async def wants_pruned(self, block_hash: bytes) -> bool:
        self.asked_pruned.append(block_hash)
        return block_hash in self.want_pruned

    async def block_connected(self, block: ConnectedBlock) -> None:
        with self.lock:
            assert block.height == len(self.hashes)
            assert not self.hashes or block.header.prev_hash == self.hashes[-1]
            self.hashes.append(block.header.hash)
            if block.block is None:
                self.pruned.append(block.height)
            else:
                self.mempool -= {tx.txid for tx in block.block.txs}

    async def block_disconnected(self, tip: BlockRef) -> bool:
        with self.lock:
            assert tip == self.chain_tip()
            if tip.height <= self.undo_floor:
                return False
            self.hashes.pop()
            self.disconnected.append(tip.height)
            return True

    async def tx_added(self, tx: Tx) -> None:
        with self.lock:
            self.mempool.add(tx.txid)

    async def tx_removed(self, txid: bytes) -> None:
        with self.lock:
            self.mempool.discard(txid)

    async def mempool_resync(self, txs: AsyncIterator[Tx]) -> None:
        fresh = {tx.txid async for tx in txs}
        with self.lock:
            self.mempool = fresh

    async def caught_up(self) -> None:
        with self.lock:
            self.in_step = True
            self.steps.append((len(self.hashes) - 1, self.hashes[-1]))

    def lost(self, error: str) -> None:
        with self.lock:
            self.in_step = False
            self.errors.append(error)


class Following:
    """Followers for some recorders on an event loop in a thread (the test stays sync)."""

    def __init__(self, node: TestNode, *recorders: Recorder, poll_s: float = 600.0) -> None:
        self.node = node
        self.recorders = recorders
        self.poll_s = poll_s
        self.followers: list[ChainFollower] = []
        self.subs: list[ZMQSubscriber] = []
        self.loop = asyncio.new_event_loop()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: all(r.in_step for r in recorders) or self.failure, timeout=60)
        self.check()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # shown by check()
            self.failure = exc

    async def _main(self) -> None:
        async with BitcoinRPC(self.node.rpc_url, cookie_file=self.node.cookie_file) as rpc:
            for recorder in self.recorders:
                sub = ZMQSubscriber({t: self.node.zmq[t] for t in FOLLOWER_TOPICS})
                self.subs.append(sub)
                self.followers.append(ChainFollower(rpc, sub, recorder, poll_s=self.poll_s))
            await asyncio.gather(*(f.run() for f in self.followers))

    def check(self) -> None:
        assert self.failure is None, repr(self.failure)

    def stop(self) -> None:
        for sub in self.subs:
            self.loop.call_soon_threadsafe(sub.close)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.loop.close()
        self.check()


@pytest.fixture
def following() -> Iterator[list[Following]]:
    running: list[Following] = []
    yield running
    for f in running:
        f.stop()


def start(running: list[Following], node: TestNode, *recorders: Recorder,
          poll_s: float = 600.0) -> Following:
    f = Following(node, *recorders, poll_s=poll_s)
    running.append(f)
    return f


def at_tip(node: TestNode, recorder: Recorder) -> bool:
    return recorder.tip() == (node.getblockcount(), node.getbestblockhash())


def test_follows_blocks_and_the_mempool(node: TestNode, following: list[Following]) -> None:
    rec = Recorder()
    f = start(following, node, rec)
    assert at_tip(node, rec)
    assert f.followers[0].stats.blocks == node.getblockcount() + 1  # from genesis
    node.mine(2)
    wait_until(lambda: at_tip(node, rec))
    txid = node.rpc("send", {node.new_address(): "1"}, None, "unset", None,
                    {"replaceable": True}, wallet=node.wallet)["txid"]
    wait_until(lambda: txid in rec.mempool_hex())
    bumped = node.w("bumpfee", txid)["txid"]  # "R" for the old one, "A" for the new
    wait_until(lambda: rec.mempool_hex() == {bumped})
    node.mine(1)
    wait_until(lambda: at_tip(node, rec) and not rec.mempool_hex())
    assert f.followers[0].stats.resyncs == 1 and not rec.errors


def test_rollback_without_a_new_block_and_back(node: TestNode,
                                                following: list[Following]) -> None:
    """invalidateblock <tip-2>: the listener is at tip-3 with the three blocks' wallet
    transactions back in its mempool at once; reconsiderblock: back. No polling (a
    10-minute poll), no new block: the sequence "D" events alone drive it."""
    sent = []
    for _ in range(3):
        sent.append(node.send(node.new_address(), "0.1"))
        node.mine(1)
    height, tip = node.getblockcount(), node.getbestblockhash()
    rec = Recorder()
    start(following, node, rec)
    first_gone = node.getblockhash(height - 2)
    node.invalidateblock(first_gone)
    assert node.getblockcount() == height - 3
    back = set(node.getrawmempool())  # bitcoind re-adds what is still valid
    assert back and back <= set(sent)
    wait_until(lambda: at_tip(node, rec) and rec.mempool_hex() == back)
    assert rec.disconnected == [height, height - 1, height - 2]
    node.reconsiderblock(first_gone)
    wait_until(lambda: rec.tip() == (height, tip) and not rec.mempool_hex())


def test_preciousblock_switches_between_equal_work_branches(
        node: TestNode, following: list[Following]) -> None:
    base = node.getblockcount()
    a = node.mine(1)[0]
    node.invalidateblock(a)
    b = node.mine(1, node.new_address("bech32m"))[0]
    node.reconsiderblock(a)  # two branches of equal work
    first = node.getbestblockhash()
    other = b if first == a else a
    rec = Recorder()
    start(following, node, rec)
    for want in (other, first, other):
        node.preciousblock(want)
        assert node.getbestblockhash() == want
        wait_until(lambda w=want: rec.tip() == (base + 1, w))  # type: ignore[misc]


def test_bitcoind_restarted_behind_the_listener(tmp_path: Path, node: TestNode,
                                                following: list[Following]) -> None:
    """Power cut: bitcoind comes back at height H without the 5 blocks it had not
    flushed. The listener that can undo rewinds to H and is in step there (never in
    step above H meanwhile); the one whose records stop at H+3 waits, out of step,
    until bitcoind regains the blocks (submitblock, as from a peer), then both are back."""
    node.snapshot(tmp_path / "at-H")
    h = node.getblockcount()
    node.mine(5)
    lost_blocks = [node.getblock(node.getblockhash(x), 0) for x in range(h + 1, h + 6)]
    full, shallow = Recorder(), Recorder(undo_floor=h + 3)
    start(following, node, full, shallow, poll_s=0.5)
    node.stop()
    # Waiting: bitcoind gone is noticed by the poll, both are out of step.
    wait_until(lambda: not full.in_step and not shallow.in_step)
    steps_before = len(full.steps)
    node.restore(tmp_path / "at-H")
    assert node.getblockcount() == h
    wait_until(lambda: at_tip(node, full) and full.in_step)
    assert all(height <= h for height, _ in full.steps[steps_before:])
    assert full.disconnected == [h + 5, h + 4, h + 3, h + 2, h + 1]
    wait_until(lambda: any("deeper than can be undone" in e for e in shallow.errors))
    assert shallow.tip()[0] == h + 3 and not shallow.in_step
    for raw in lost_blocks:
        assert node.submitblock(raw) is None
    wait_until(lambda: at_tip(node, full) and at_tip(node, shallow) and shallow.in_step)
    assert node.getblockcount() == h + 5


def test_pruned_blocks(node_factory: NodeFactory, node: TestNode,
                       following: list[Following]) -> None:
    """Blocks pruned before the listener saw them: asked whether it wants each; header
    only if not, from a peer that keeps full blocks (getblockfrompeer) if it does."""
    peer = node_factory.create(prune=False)  # keeps every block, serves them
    node_factory.connect(peer, node)
    node.mine(500)
    wait_until(lambda: peer.getblockcount() == node.getblockcount(), timeout=120)
    node.prune_to(node.getblockcount() - 300)
    pruned_height = int(node.getblockchaininfo()["pruneheight"])
    assert pruned_height > 100
    wanted = node.getblockhash(100)
    rec = Recorder(want_pruned={hex_str_to_hash(wanted)})
    f = start(following, node, rec)
    assert at_tip(node, rec)
    assert len(rec.asked_pruned) == pruned_height  # every block below pruneheight
    assert 100 not in rec.pruned and rec.pruned == [x for x in range(pruned_height) if x != 100]
    assert f.followers[0].stats.fetched_from_peer == 1
