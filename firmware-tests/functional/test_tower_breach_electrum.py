"""A real breach, end to end, in regtest (after Electrum's tests/regtest/regtest.sh
"watchtower" scenario): two Debian Electrum 4.3 Lightning wallets, alice and bob, use the
box's Electrum server; alice opens a channel to bob and pays him twice, keeping the
commitment of before the second payment (now revoked); bob goes offline; alice
broadcasts the revoked commitment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from functional.framework.appliance import IndexerProcess
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
def wallets(tmp_path: Path, timeout_factor: float) -> Any:
    alice = ElectrumLN(tmp_path / "alice", "alice", timeout_factor=timeout_factor)
    bob = ElectrumLN(tmp_path / "bob", "bob", listen=True, timeout_factor=timeout_factor)
    yield alice, bob
    for w in (alice, bob):
        w.stop()


def test_revoked_commitment_broadcast(node: TestNode, box: IndexerProcess,
                                      wallets: tuple[ElectrumLN, ElectrumLN],
                                      timeout_factor: float) -> None:
    alice, bob = wallets
    f = timeout_factor
    # The box knows both wallets (their master public keys), nothing of Lightning.
    tip = node.getblockcount()
    for w in (alice, bob):
        box.wallet_add(w.xpub(), birthday=tip)
    server = f"127.0.0.1:{box.tcp_port}:t"
    bob.start(server)  # bob first: he listens
    alice.start(server)

    funding_address = alice.call("getunusedaddress")
    node.send(funding_address, "1")
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
    alice.pay(bob.invoice("0.01", "invoice2"))  # the saved commitment is now revoked
    chan = bob.channel(point)
    assert chan is not None and chan["local_balance"] == 2_000_000, chan

    bob.stop()
    ctx_txid = node.sendrawtransaction(revoked)
    ctx = node.decoderawtransaction(revoked)
    funding_txid, funding_vout = point.split(":")
    assert ctx["vin"][0]["txid"] == funding_txid and ctx["vin"][0]["vout"] == int(funding_vout)
    assert ctx_txid in node.getrawmempool()
