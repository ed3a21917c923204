"""The watchtower against a real regtest bitcoind: breaches answered from the mempool and
from blocks, crash and restart, reorgs, auth, bad input over real HTTP.

A "commitment" here is a signed but unbroadcast wallet transaction and its "penalty" a
signed child spending it: the mechanics the tower relies on (a txid appearing, a
presigned child broadcast) are exactly those of a Lightning breach. The full Lightning
breach with two Electrum wallets is test_tower_breach_electrum.py.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from appliance.chain.encoding import hex_str_to_hash
from appliance.tower.client import TeosClient, TowerRefused
from appliance.tower.crypto import locator_of
from functional.framework.appliance import TowerProcess
from functional.framework.node import TestNode
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


def presigned_pair(node: TestNode) -> tuple[dict[str, Any], dict[str, Any]]:
    """(commitment, penalty): each {"hex", "txid"}; neither is broadcast."""
    target = node.new_address()
    psbt = node.w("walletcreatefundedpsbt", [], [{target: "1.0"}], 0, {"fee_rate": 5})["psbt"]
    signed = node.w("walletprocesspsbt", psbt)["psbt"]
    commitment_hex = node.rpc("finalizepsbt", signed)["hex"]
    decoded = node.rpc("decoderawtransaction", commitment_hex)
    vout = next(o for o in decoded["vout"] if o["scriptPubKey"].get("address") == target)
    sweep_to = node.new_address()
    raw = node.rpc("createrawtransaction", [{"txid": decoded["txid"], "vout": vout["n"]}],
                   [{sweep_to: "0.9999"}])
    penalty = node.w("signrawtransactionwithwallet", raw, [{
        "txid": decoded["txid"], "vout": vout["n"], "scriptPubKey": vout["scriptPubKey"]["hex"],
        "amount": Decimal("1.0")}])
    assert penalty["complete"], penalty
    return ({"hex": commitment_hex, "txid": decoded["txid"], "vout": vout["n"]},
            {"hex": penalty["hex"], "txid": node.rpc("decoderawtransaction", penalty["hex"])["txid"],
             "address": sweep_to})


def in_mempool(node: TestNode, txid: str) -> bool:
    return txid in node.getrawmempool()


def teos_client(tower: TowerProcess) -> TeosClient:
    return TeosClient(f"http://127.0.0.1:{tower.http_port}", PrivateKey(),
                      basic_auth=(tower.USER, tower.PASSWORD))


def test_teos_appointment_answered_from_the_mempool(node: TestNode, tower: TowerProcess) -> None:
    client = teos_client(tower)
    reg = client.register()
    assert reg["available_slots"] == 10000
    tower_id = bytes.fromhex(tower.status()["tower_id"])
    assert client.tower_id == tower_id  # receipts are signed with the box's tower key
    commitment, penalty = presigned_pair(node)
    ctxid = hex_str_to_hash(commitment["txid"])
    receipt = client.add_appointment(ctxid, bytes.fromhex(penalty["hex"]), to_self_delay=144)
    assert receipt["start_block"] == node.getblockcount()
    status, got = client.get_appointment(locator_of(ctxid))
    assert (status, got["status"]) == (200, "being_watched")

    started = time.monotonic()
    node.sendrawtransaction(commitment["hex"])
    wait_until(lambda: in_mempool(node, penalty["txid"]), timeout=10)
    print(f"breach -> penalty in mempool: {time.monotonic() - started:.3f} s")
    tower.wait_log("broadcast (attempt 1)")
    node.mine(1)
    tower.wait_log("confirmed at height")
    assert node.getrawtransaction(penalty["txid"], True, node.getbestblockhash())["confirmations"] == 1
    status, got = client.get_appointment(locator_of(ctxid))
    assert got["status"] == "dispute_responded"
    assert got["appointment"]["penalty_txid"] == penalty["txid"]
    st = tower.status()
    assert (st["breaches"], st["penalties_confirmed"]) == (1, 1)
    # On the status bus for the display ("Breach stopped") and `appliance status`.
    from appliance.config import load_config
    from appliance.status import read_status_once

    def bus_says_stopped() -> bool:
        state = read_status_once(load_config(tower.config).hearth.run_dir).get("tower")
        return bool(state and state.status and state.status.counters.get("last_breach_stopped"))
    wait_until(bus_says_stopped, timeout=10)


def test_electrum_sweep_answered_from_a_block_after_kill_and_restart(
        node: TestNode, tower: TowerProcess) -> None:
    commitment, penalty = presigned_pair(node)
    funding = f"{commitment['txid']}:{commitment['vout']}"  # any outpoint stands in for it
    assert tower.rpc("get_ctn", funding, node.new_address()) == 0
    assert tower.rpc("add_sweep_tx", funding, 7, f"{commitment['txid']}:{commitment['vout']}",
                     penalty["hex"]) is None
    assert tower.rpc("get_ctn", funding, node.new_address()) == 7
    tower.kill()  # acknowledged means on disk: nothing may be lost
    # The breach happens and is mined while the tower is down...
    node.sendrawtransaction(commitment["hex"])
    node.mine(1)
    assert not in_mempool(node, penalty["txid"])
    # ...and the tower finds it when it catches up on restart.
    tower.start()
    wait_until(lambda: in_mempool(node, penalty["txid"]), timeout=20)
    node.mine(1)
    tower.wait_log("confirmed at height")


def test_appointment_after_its_breach_is_answered_at_once(node: TestNode, tower: TowerProcess) -> None:
    """The breach went out before the wallet reached the tower (Electrum syncs every 5 s):
    the tower remembers recent txids and answers when the appointment arrives."""
    client = teos_client(tower)
    client.register()
    commitment, penalty = presigned_pair(node)
    checked = tower.status()["txs_checked"]
    node.sendrawtransaction(commitment["hex"])
    # The tower has seen it on ZMQ (and found nothing waiting) before the appointment.
    wait_until(lambda: tower.status()["txs_checked"] > checked, timeout=10)
    client.add_appointment(hex_str_to_hash(commitment["txid"]), bytes.fromhex(penalty["hex"]))
    wait_until(lambda: in_mempool(node, penalty["txid"]), timeout=10)
    tower.wait_log("already broadcast when its penalty arrived")


def test_reorg_of_breach_and_penalty_rebroadcasts(node: TestNode, tower: TowerProcess) -> None:
    client = teos_client(tower)
    client.register()
    commitment, penalty = presigned_pair(node)
    client.add_appointment(hex_str_to_hash(commitment["txid"]), bytes.fromhex(penalty["hex"]))
    node.sendrawtransaction(commitment["hex"])
    wait_until(lambda: in_mempool(node, penalty["txid"]), timeout=10)
    node.mine(1)
    tower.wait_log("confirmed at height")
    # Take the block away, and with it both transactions: a restart without the saved
    # mempool forgets them, so only the tower can bring them back.
    node.invalidateblock(node.getbestblockhash())
    # At once, from the disconnect (no new block needed): rebroadcast before the restart.
    tower.wait_log("reorg at height")
    tower.wait_log("still unconfirmed: sent again")
    node.stop()
    node.start("-persistmempool=0", "-walletbroadcast=0")  # the wallet would resubmit them
    assert not in_mempool(node, commitment["txid"])
    address = node.new_address("bech32m")
    for _ in range(2):  # a longer branch of empty blocks: the reorg the tower must see
        node.generateblock(address, [])  # each block re-sends what is unconfirmed
    wait_until(lambda: in_mempool(node, penalty["txid"]), timeout=30)
    assert in_mempool(node, commitment["txid"])
    node.mine(1)
    tower.wait_log("confirmed at height")


def test_http_auth_and_garbage(tower: TowerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "get_ctn",
            "params": ["00" * 32 + ":0", "bcrt1qxyz0000000000"]}
    assert tower.post("/", body, auth=None)[0] == 401
    assert tower.post("/", body, auth=("tower-test", "wrong"))[0] == 403
    assert tower.post("/register", {"user_id": "02" * 33}, auth=None)[0] == 401
    status, reply = tower.post("/", b"{garbage")
    assert status == 200 and reply["error"]["code"] == -32700
    status, reply = tower.post("/add_appointment", b"\x00" * 20_000)
    assert status == 413
    status, reply = tower.post("/add_appointment", {"appointment": {}, "signature": "x"})
    assert status == 400 and reply["error_code"] == 1
    client = TeosClient(f"http://127.0.0.1:{tower.http_port}", PrivateKey())
    with pytest.raises(TowerRefused) as err:  # registering needs the credentials (or Noise)
        client.register()
    assert err.value.status == 401
    with pytest.raises(TowerRefused) as err:  # unregistered users get nothing
        client.get_subscription_info()
    assert err.value.body["error_code"] == 7
    assert tower.rpc("get_ctn", "00" * 32 + ":1", "bcrt1qxyz0000000000") == 0  # still serving


def test_noise_channel_paired_clients_only(tmp_path: Path, node: TestNode, tower: TowerProcess) -> None:
    """Over BOLT-08 a paired client needs no password (its key is the credential); an
    unpaired key does not get past the handshake."""
    import asyncio
    import subprocess
    import sys

    from appliance.config import load_config
    from appliance.identity import derive_secp256k1, load_hsm_secret, write_secret_file
    from appliance.pairing.store import Whitelist
    from appliance.transport.noise import Keypair
    from appliance.transport.stream import STREAM_ERRORS, connect
    from functional.framework.util import free_port

    cfg = load_config(tower.config)
    box_key = derive_secp256k1(load_hsm_secret(cfg.hsm_secret_file), "noise-static").public
    state = tmp_path / "client"
    client_secret = bytes(range(1, 33))
    write_secret_file(state / "client_key", client_secret)
    (state / "box.json").write_text(json.dumps({"key": box_key.hex(), "host": "127.0.0.1",
                                                "port": 1}))

    async def handshake_refused() -> bool:
        try:
            stream = await connect("127.0.0.1", tower.noise_port, Keypair(client_secret), box_key,
                                   timeout=5)
            await stream.send(b"GET /ping HTTP/1.0\r\n\r\n")
            await stream.recv(timeout=5)
        except (*STREAM_ERRORS, ConnectionError, OSError):
            return True
        return False
    assert asyncio.run(handshake_refused())  # not paired (yet)

    # Pair the way the Electrum service does: its whitelist file gains the key.
    Whitelist(cfg.paired_clients_file).add(
        Keypair(client_secret).public, "test laptop")
    port = free_port()
    tunnel = subprocess.Popen([str(Path(sys.executable).parent / "appliance-client"),
                               "--state-dir", str(state), "tunnel", "--to", "tower",
                               "--listen", f"127.0.0.1:{port}",
                               "--box-port", str(tower.noise_port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert "tunnel:" in (tunnel.stdout.readline() if tunnel.stdout else "")
        client = TeosClient(f"http://127.0.0.1:{port}", PrivateKey())  # no password
        assert client.register()["available_slots"] == 10000
        # Electrum's watchtower_url over the tunnel: no credentials needed either.
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{port}/", method="POST", data=json.dumps(
            {"jsonrpc": "2.0", "id": "1", "method": "get_ctn",
             "params": ["11" * 32 + ":0", "bcrt1qxyz0000000000"]}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["result"] == 0
        # Revoked (long button press): new connections are refused at once.
        Whitelist(cfg.paired_clients_file).reset()
        with pytest.raises(Exception):  # noqa: B017 - the tunnel drops the connection
            TeosClient(f"http://127.0.0.1:{port}", PrivateKey(), timeout=5).register()
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)
        if tunnel.stdout is not None:
            tunnel.stdout.close()
