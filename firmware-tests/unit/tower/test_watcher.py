"""The watcher's decisions on a real store; broadcasts are recorded here (the functional
tests send them to a real bitcoind)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from appliance.chain import Block, BlockHeader
from appliance.tower.crypto import encrypt_blob, locator_of
from appliance.tower.store import Appointment, TowerStore, User, outpoint
from appliance.tower.watcher import BroadcastResult, Watcher

from .helpers import display, funding_and_breach, make_tx


class Harness:
    def __init__(self, path: Path) -> None:
        self.store = TowerStore(path)
        self.sent: list[bytes] = []
        self.events: list[tuple[str, str]] = []
        self.refuse: str = ""
        self.watcher = Watcher(self.store, self.broadcast, lambda k, d: self.events.append((k, d)),
                               finality_depth=3)

    async def broadcast(self, raw: bytes) -> BroadcastResult:
        self.sent.append(raw)
        return BroadcastResult(False, self.refuse) if self.refuse else BroadcastResult(True)

    def block(self, txs: list, height: int) -> None:  # type: ignore[type-arg]
        header = BlockHeader(1, os.urandom(32), os.urandom(32), 0, 0, 0, os.urandom(32), b"")
        asyncio.run(self.watcher.on_block(Block(header, txs), height))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path / "db")
    yield harness
    harness.store.close()


def test_electrum_sweep_sent_on_mempool_breach_once(h: Harness) -> None:
    funding, breach = funding_and_breach()
    sweep = make_tx([(breach.txid, 1)], 1)
    h.store.add_sweep(outpoint(funding.txid, 0), 3, outpoint(breach.txid, 1), sweep.raw)
    unrelated = make_tx([(os.urandom(32), 0)])
    assert asyncio.run(h.watcher.on_transaction(unrelated)) == 0
    assert asyncio.run(h.watcher.on_transaction(breach)) == 1
    assert h.sent == [sweep.raw]
    assert ("breach", display(breach.txid)) in h.events
    # The same breach in a block: no second response, the breach height is noted; the
    # unconfirmed penalty is sent again quietly (a full mempool may have dropped it).
    h.block([breach], 101)
    assert h.sent == [sweep.raw, sweep.raw]
    assert [k for k, _ in h.events].count("penalty_broadcast") == 1
    assert h.store.tracker(breach.txid)["breach_height"] == 101
    # The penalty confirms: "Breach stopped".
    h.block([sweep], 102)
    assert ("penalty_confirmed", display(breach.txid)) in h.events
    assert h.watcher.stats["penalties_confirmed"] == 1


def test_teos_appointment_decrypted_and_garbage_dropped(h: Harness) -> None:
    _, breach = funding_and_breach()
    penalty = make_tx([(breach.txid, 0)], 1)
    good_user, bad_user = b"\x02" + os.urandom(32), b"\x03" + os.urandom(32)
    loc = locator_of(breach.txid)
    for user, blob in ((good_user, encrypt_blob(penalty.raw, breach.txid)),
                       (bad_user, os.urandom(200))):
        h.store.put_appointment(Appointment(loc, user, 144, 100, blob), User(user, 9, 100, 9999))
    assert asyncio.run(h.watcher.on_transaction(breach)) == 1
    assert h.sent == [penalty.raw]
    assert h.watcher.stats["undecryptable"] == 1
    assert [a.user for a in h.store.appointments_at(loc)] == [good_user]


def test_failed_broadcast_is_retried_each_block_and_reorg_rebroadcasts(h: Harness) -> None:
    funding, breach = funding_and_breach()
    sweep = make_tx([(breach.txid, 0)], 1)
    h.store.add_sweep(outpoint(funding.txid, 0), 1, outpoint(breach.txid, 0), sweep.raw)
    h.refuse = "bad-txns-inputs-missingorspent"
    asyncio.run(h.watcher.on_transaction(breach))
    tracker = h.store.tracker(breach.txid)
    assert tracker["penalties"][0]["error"].startswith("bad-txns")
    h.refuse = ""
    h.block([], 101)  # retried: breach first (not yet confirmed), then the penalty
    assert h.sent[-2:] == [breach.raw, sweep.raw]
    h.block([breach, sweep], 102)
    assert h.store.tracker(breach.txid)["penalties"][0]["height"] == 102
    before = len(h.sent)
    asyncio.run(h.watcher.on_disconnect(102))  # reorged out
    assert h.sent[before:] == [breach.raw, sweep.raw]
    assert h.store.tracker(breach.txid)["penalties"][0]["height"] is None
    assert ("reorg_rebroadcast", display(breach.txid)) in h.events


def test_closed_channel_sweeps_dropped_after_finality(h: Harness) -> None:
    funding, breach = funding_and_breach()
    sweep = make_tx([(breach.txid, 0)], 1)
    fo = outpoint(funding.txid, 0)
    h.store.register_channel(fo, "bcrt1qx")
    h.store.add_sweep(fo, 1, outpoint(breach.txid, 0), sweep.raw)
    cooperative_close = make_tx([(funding.txid, 0)], 2)
    h.block([cooperative_close], 200)
    assert h.store.channel(fo)["closed_height"] == 200
    h.block([], 201)
    assert h.store.counters["sweeps"] == 1
    h.block([], 202)  # 3 deep: final
    assert h.store.channel(fo) is None
    assert h.store.counters["sweeps"] == 0
    assert not h.store.has_locator(locator_of(breach.txid))


def test_tracker_survives_restart(tmp_path: Path) -> None:
    first = Harness(tmp_path / "db")
    funding, breach = funding_and_breach()
    sweep = make_tx([(breach.txid, 0)], 1)
    first.store.add_sweep(outpoint(funding.txid, 0), 1, outpoint(breach.txid, 0), sweep.raw)
    first.refuse = "node unreachable"
    asyncio.run(first.watcher.on_transaction(breach))
    first.store.close()
    second = Harness(tmp_path / "db")
    second.block([], 300)  # the next block after a restart retries the response
    assert second.sent == [breach.raw, sweep.raw]
    second.store.close()


def test_penalty_arriving_after_its_breach_is_sent_at_once(tmp_path: Path) -> None:
    funding, breach = funding_and_breach()
    sweep = make_tx([(breach.txid, 0)], 1)
    store = TowerStore(tmp_path / "db")
    sent: list[bytes] = []

    async def broadcast(raw: bytes) -> BroadcastResult:
        sent.append(raw)
        return BroadcastResult(True)

    async def fetch(txid: bytes, block_hash: bytes | None) -> bytes | None:
        return breach.raw if txid == breach.txid else None

    watcher = Watcher(store, broadcast, lambda k, d: None, fetch_tx=fetch)
    asyncio.run(watcher.on_transaction(breach))  # nothing waits on it yet
    assert sent == []
    store.add_sweep(outpoint(funding.txid, 0), 1, outpoint(breach.txid, 0), sweep.raw)
    assert asyncio.run(watcher.check_recent(locator_of(breach.txid))) == 1
    assert sent == [sweep.raw]
    # A second sweep for the same, already answered, breach joins the response.
    sweep2 = make_tx([(breach.txid, 1)], 1)
    store.add_sweep(outpoint(funding.txid, 0), 2, outpoint(breach.txid, 1), sweep2.raw)
    assert asyncio.run(watcher.check_recent(locator_of(breach.txid))) == 1
    assert sent[-1] == sweep2.raw
    assert asyncio.run(watcher.check_recent(b"\x00" * 16)) == 0  # never seen
    store.close()
