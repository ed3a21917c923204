"""A real breach, end to end, in regtest (after Electrum's tests/regtest/regtest.sh
"watchtower" scenario): two Debian Electrum 4.3 Lightning wallets, alice and bob, use the
box's Electrum server; alice opens a channel to bob and pays him twice, keeping the
commitment of before the second payment (now revoked); bob syncs with a tower, then goes
offline; alice broadcasts the revoked commitment, and the box's tower broadcasts bob's
sweep, which confirms to bob's wallet.

Twice: with bob's ``watchtower_url`` on the box's Electrum-compatible tower, and with it
on a relay that turns his sweeps into encrypted TEOS appointments made by the project's
own client code (the box then sees nothing until the breach)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from appliance.chain.encoding import hex_str_to_hash
from appliance.tower.client import TeosClient
from appliance.tower.crypto import locator_of
from functional.framework.appliance import IndexerProcess, TowerProcess
from functional.framework.electrum_ln import ElectrumLN, SweepRelay, wait_for
from functional.framework.electrum_wallet import electrum_available
from functional.framework.node import TestNode

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not electrum_available(),
                                 reason="Debian's electrum is installed by ./build.sh test")]


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


@dataclass
class Breach:
    point: str  # the channel's funding outpoint
    revoked_ctn: int
    ctx: dict[str, Any]  # the revoked commitment, decoded, broadcast by alice
    server: str  # the box's Electrum server, as Electrum takes it
    sent_at: float  # unix time just before alice's sendrawtransaction


def breach(node: TestNode, box: IndexerProcess, alice: ElectrumLN, bob: ElectrumLN,
           watchtower_url: str, tower_has: Callable[[str, str], int], f: float) -> Breach:
    """regtest.sh's "watchtower" scenario up to the broadcast of the revoked commitment;
    ``tower_has(point, funding_address)`` is the highest ctn the tower holds sweeps for."""
    # The box knows both wallets (their master public keys), nothing of Lightning.
    tip = node.getblockcount()
    for w in (alice, bob):
        box.wallet_add(w.xpub(), birthday=tip)
    bob.set_config(watchtower_url=watchtower_url)  # http to 127.0.0.1: Electrum accepts it
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
    # every 5 s).
    funding_txid, funding_vout = point.split(":")
    funding_address = node.gettxout(funding_txid, int(funding_vout))["scriptPubKey"]["address"]
    wait_for(lambda: tower_has(point, funding_address) >= revoked_ctn,
             f"the tower to hold sweeps up to ctn {revoked_ctn}", factor=f)

    bob.stop()  # offline for good: only the box can act
    assert not bob.running
    sent_at = time.time()
    ctx_txid = node.sendrawtransaction(revoked)
    ctx = node.decoderawtransaction(revoked)
    assert ctx["txid"] == ctx_txid
    assert ctx["vin"][0]["txid"] == funding_txid and ctx["vin"][0]["vout"] == int(funding_vout)
    return Breach(point, revoked_ctn, ctx, server, sent_at)


def check_sweep(node: TestNode, b: Breach, bob: ElectrumLN, f: float) -> dict[str, Any]:
    """The box's sweep is in the mempool and takes alice's to_local (the P2WSH output,
    not bob's own 0.01 to_remote) to an address of bob's wallet; returns it decoded."""
    sweep: dict[str, Any] = wait_for(lambda: mempool_spender(node, b.ctx["txid"]),
                                     "the tower's sweep in the mempool", timeout=30, factor=f)
    assert len(sweep["vin"]) == 1 and len(sweep["vout"]) == 1, sweep
    spent = b.ctx["vout"][sweep["vin"][0]["vout"]]
    assert spent["scriptPubKey"]["type"] == "witness_v0_scripthash"
    assert spent["value"] > Decimal("0.12"), b.ctx["vout"]
    # Electrum 4.3 sweeps to one of bob's own wallet addresses (asked with him offline).
    assert bob.owns(sweep["vout"][0]["scriptPubKey"]["address"])
    return sweep


def report_latency(tower: TowerProcess, b: Breach, sweep: dict[str, Any]) -> None:
    """Print (never assert) breach sendrawtransaction -> tower's penalty broadcast, from
    the tower's own log timestamp (same machine, same clock)."""
    line = next(x for x in tower.log_text().splitlines()
                if f"penalty {sweep['txid']} broadcast" in x)
    stamp = datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    sent = stamp.replace(tzinfo=UTC).timestamp() - b.sent_at
    print(f"revoked commitment sent -> penalty broadcast by the tower: {sent * 1000:.0f} ms")


def check_bob_gets_it(node: TestNode, b: Breach, bob: ElectrumLN, sweep: dict[str, Any],
                      f: float) -> None:
    """Confirmed; and bob, back online, sees the sweep and his to_remote in his wallet
    (served by the box)."""
    assert node.gettxout(sweep["txid"], 0)["confirmations"] == 1
    bob.start(b.server)
    spent = b.ctx["vout"][sweep["vin"][0]["vout"]]
    to_remote = sum(o["value"] for o in b.ctx["vout"]
                    if o is not spent and o["scriptPubKey"]["type"] == "witness_v0_keyhash")
    want = int((sweep["vout"][0]["value"] + to_remote) * 100_000_000)
    wait_for(lambda: bob.balance()[0] == want, f"bob's on-chain balance of {want} sat",
             factor=f)


def test_electrum_tower_sweeps_a_revoked_commitment(
        node: TestNode, box: IndexerProcess, tower: TowerProcess,
        wallets: tuple[ElectrumLN, ElectrumLN], timeout_factor: float) -> None:
    alice, bob = wallets
    f = timeout_factor

    def tower_has(point: str, address: str) -> int:
        return int(tower.rpc("get_ctn", point, address))  # what bob's sync loop asks

    b = breach(node, box, alice, bob, tower.url, tower_has, f)
    sweep = check_sweep(node, b, bob, f)
    tower.wait_log(f"breach: {b.ctx['txid']} spends a revoked state", timeout=10)
    tower.wait_log(f"penalty {sweep['txid']} broadcast", timeout=10)
    report_latency(tower, b, sweep)
    status = tower.status()
    assert status["breaches"] == 1 and status["penalties_broadcast"] == 1, status
    node.mine(1)
    tower.wait_log(f"penalty {sweep['txid']} confirmed", timeout=30)
    check_bob_gets_it(node, b, bob, sweep, f)


def test_teos_appointment_from_electrums_sweep_stops_the_breach(
        node: TestNode, box: IndexerProcess, tower: TowerProcess,
        wallets: tuple[ElectrumLN, ElectrumLN], timeout_factor: float) -> None:
    alice, bob = wallets
    f = timeout_factor
    client = TeosClient(f"http://127.0.0.1:{tower.http_port}", PrivateKey(),
                        basic_auth=(tower.USER, tower.PASSWORD))
    client.register()
    relay = SweepRelay(client)
    try:
        b = breach(node, box, alice, bob, relay.url,
                   lambda point, _addr: relay.ctns.get(point, 0), f)
    finally:
        relay.close()
    assert relay.errors == []
    # The box held only encrypted blobs (no Electrum sweeps), one of them for the
    # commitment alice broadcast (the others for her other revoked states).
    assert tower.status()["sweeps"] == 0
    mine = [a for a in relay.appointments if a["commitment"] == b.ctx["txid"]]
    assert len(mine) == 1, relay.appointments
    locator = locator_of(hex_str_to_hash(b.ctx["txid"]))

    sweep = check_sweep(node, b, bob, f)
    assert node.decoderawtransaction(mine[0]["raw_tx"])["txid"] == sweep["txid"]
    tower.wait_log(f"breach: {b.ctx['txid']} spends a revoked state", timeout=10)
    tower.wait_log(f"penalty {sweep['txid']} broadcast", timeout=10)
    report_latency(tower, b, sweep)
    node.mine(1)
    tower.wait_log(f"penalty {sweep['txid']} confirmed", timeout=30)
    status, got = client.get_appointment(locator)
    assert (status, got["status"]) == (200, "dispute_responded"), got
    assert got["appointment"]["penalty_txid"] == sweep["txid"]
    check_bob_gets_it(node, b, bob, sweep, f)
