"""A real breach, end to end, in regtest (after Electrum's tests/regtest/regtest.sh
"watchtower" scenario): two Debian Electrum 4.3 Lightning wallets, alice and bob, use the
box's Electrum server; alice opens a channel to bob and pays him twice, keeping the
commitment of before the second payment (now revoked); bob's ``watchtower_url`` is the
box's tower and he syncs with it, then goes offline; alice broadcasts the revoked
commitment, and the box's tower broadcasts bob's sweep, which confirms to bob's wallet."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from functional.framework.appliance import IndexerProcess, TowerProcess
from functional.framework.electrum_ln import ElectrumLN, wait_for
from functional.framework.electrum_wallet import electrum_available
from functional.framework.node import TestNode

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not electrum_available(),
                                 reason="Debian's electrum is installed by ./build.sh test")]


@pytest.fixture
def box(tmp_path: Path, node: TestNode, timeout_factor: float) -> Any:
    proc = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def tower(tmp_path: Path, node: TestNode, timeout_factor: float) -> Any:
    proc = TowerProcess(tmp_path / "tower", node, timeout_factor=timeout_factor)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def wallets(tmp_path: Path, timeout_factor: float) -> Any:
    alice = ElectrumLN(tmp_path / "alice", "alice", timeout_factor=timeout_factor)
    bob = ElectrumLN(tmp_path / "bob", "bob", listen=True, timeout_factor=timeout_factor)
    yield alice, bob
    for w in (alice, bob):
        w.stop()


def mempool_spender(node: TestNode, txid: str) -> dict[str, Any] | None:
    for candidate in node.getrawmempool():
        tx = node.decoderawtransaction(node.getrawtransaction(candidate))
        if any(i.get("txid") == txid for i in tx["vin"]):
            return dict(tx)
    return None


def test_tower_sweeps_a_revoked_commitment(node: TestNode, box: IndexerProcess,
                                          tower: TowerProcess,
                                          wallets: tuple[ElectrumLN, ElectrumLN],
                                          timeout_factor: float) -> None:
    alice, bob = wallets
    f = timeout_factor
    # The box knows both wallets (their master public keys), nothing of Lightning.
    tip = node.getblockcount()
    for w in (alice, bob):
        box.wallet_add(w.xpub(), birthday=tip)
    bob.set_config(watchtower_url=tower.url)  # http to 127.0.0.1: Electrum accepts it
    server = f"127.0.0.1:{box.tcp_port}:t"
    bob.start(server)  # bob first: he listens
    alice.start(server)

    node.send(alice.call("getunusedaddress"), "1")
    node.mine(1)
    wait_for(lambda: alice.balance() == (100_000_000, 0), "alice's 1 BTC, confirmed", factor=f)

    point = alice.call("open_channel", connection_string=bob.call("nodeid"), amount="0.15")
    # The funding output is a 2-of-2 no wallet derives: both Electrums subscribed to it,
    # so the box watches it (watch on subscribe) and they see it confirm.
    node.mine(3)
    for w in (alice, bob):
        wait_for(lambda w=w: w.channel_state(point) == "OPEN", f"{w.name}'s channel OPEN",
                 factor=f)

    alice.pay(bob.invoice("0.01", "invoice1"))
    revoked = alice.call("get_channel_ctx", channel_point=point, iknowwhatimdoing=True)
    alice_chan = alice.channel(point)
    assert alice_chan is not None
    revoked_ctn = int(alice_chan["local_ctn"])
    alice.pay(bob.invoice("0.01", "invoice2"))  # the saved commitment is now revoked
    chan = bob.channel(point)
    assert chan is not None and chan["local_balance"] == 2_000_000, chan

    # Bob's Electrum hands the tower a sweep for each revoked state of alice's (it polls
    # every 5 s); the tower's get_ctn is what his sync loop asks too.
    funding_txid, funding_vout = point.split(":")
    funding_address = node.gettxout(funding_txid, int(funding_vout))["scriptPubKey"]["address"]
    wait_for(lambda: tower.rpc("get_ctn", point, funding_address) >= revoked_ctn,
             f"the tower to hold sweeps up to ctn {revoked_ctn}", factor=f)

    bob.stop()  # offline for good: only the box can act
    assert not bob.running
    ctx_txid = node.sendrawtransaction(revoked)
    ctx = node.decoderawtransaction(revoked)
    assert ctx["vin"][0]["txid"] == funding_txid and ctx["vin"][0]["vout"] == int(funding_vout)

    sweep = wait_for(lambda: mempool_spender(node, ctx_txid), "the tower's sweep in the mempool",
                     timeout=30, factor=f)
    tower.wait_log(f"breach: {ctx_txid} spends a revoked state", timeout=10)
    tower.wait_log(f"penalty {sweep['txid']} broadcast", timeout=10)
    status = tower.status()
    assert status["breaches"] == 1 and status["penalties_broadcast"] >= 1, status
    # It takes alice's to_local (the P2WSH output that is not bob's 0.01 to_remote).
    assert len(sweep["vin"]) == 1
    spent = ctx["vout"][sweep["vin"][0]["vout"]]
    assert spent["scriptPubKey"]["type"] == "witness_v0_scripthash"
    to_local = spent["value"]
    assert to_local > Decimal("0.12"), ctx["vout"]
    assert len(sweep["vout"]) == 1
    sweep_address = sweep["vout"][0]["scriptPubKey"]["address"]

    node.mine(1)
    assert node.gettxout(sweep["txid"], 0)["confirmations"] == 1
    tower.wait_log(f"penalty {sweep['txid']} confirmed", timeout=30)
    # Electrum 4.3 sweeps to one of bob's own wallet addresses.
    assert bob.owns(sweep_address)
    # Bob comes back: his wallet (served by the box) shows the sweep and his to_remote.
    bob.start(server)
    to_remote = sum(o["value"] for o in ctx["vout"]
                    if o["scriptPubKey"].get("address") != spent["scriptPubKey"]["address"]
                    and o["scriptPubKey"]["type"] == "witness_v0_keyhash")
    want = int((sweep["vout"][0]["value"] + to_remote) * 100_000_000)
    wait_for(lambda: bob.balance()[0] == want, f"bob's on-chain balance of {want} sat",
             factor=f)
