"""Pairing over BOLT-08: the QR code's payload, the whitelist, reset, and a stock
Electrum wallet reaching the box through `appliance-client tunnel`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.pairing.payload import PairingPayload
from appliance.transport.noise import Keypair
from appliance.transport.stream import STREAM_ERRORS, connect
from functional.framework.appliance import IndexerProcess
from functional.framework.electrum_wallet import ElectrumWallet, electrum_available, vpub_of
from functional.framework.node import TestNode
from functional.framework.util import CLIENT, free_port, run_client, wait_until

pytestmark = pytest.mark.node




async def noise_call(box: IndexerProcess, key: Keypair, *requests: dict[str, Any]) -> list[Any]:
    """Open a Noise channel as ``key`` and send requests; replies, or [] if dropped."""
    status = box.status()["indexer"]["pairing"]
    stream = await connect("127.0.0.1", box.noise_port, key, bytes.fromhex(status["box_key"]),
                           timeout=10)
    replies: list[Any] = []
    try:
        buffer = b""
        for i, req in enumerate(requests):
            await stream.send(json.dumps({"jsonrpc": "2.0", "id": i, **req}).encode() + b"\n")
            while b"\n" not in buffer:
                buffer += await stream.recv(timeout=10)
            line, buffer = buffer.split(b"\n", 1)
            replies.append(json.loads(line))
    except STREAM_ERRORS:
        pass  # the box hung up
    finally:
        stream.close()
    return replies


def test_pair_then_serve_then_reset(tmp_path: Path, box: IndexerProcess) -> None:
    pairing = box.status()["indexer"]["pairing"]
    assert pairing["window_open"] and pairing["paired"] == 0  # first boot: open
    code = box.cli("pairing", "show").stdout.strip()
    payload = PairingPayload.decode(code)
    assert payload.pubkey.hex() == pairing["box_key"] and payload.port == box.noise_port

    # A stranger learns nothing: no reply at all, connection closed.
    stranger = Keypair.generate()
    assert asyncio.run(noise_call(box, stranger, {"method": "server.version",
                                                  "params": ["x", "1.4"]})) == []
    assert asyncio.run(noise_call(box, stranger, {"method": "hearth.pair", "params": {
        "token": "00" * 8, "label": "guess"}})) == []

    # Garbage instead of a handshake: dropped and counted, the box keeps serving.
    import socket
    with socket.create_connection(("127.0.0.1", box.noise_port)) as raw:
        raw.sendall(b"\x00" * 50)
        raw.settimeout(10)
        assert raw.recv(100) == b""
    wait_until(lambda: box.status()["indexer"]["pairing"]["failed_handshakes"] >= 1)
    assert box.status()["indexer"]["pairing"]["refused"] >= 2

    laptop = tmp_path / "laptop"
    out = run_client(laptop, "pair", code, "--label", "laptop").stdout
    assert "paired with the box" in out
    # The token was single use, and the window closed.
    res = run_client(tmp_path / "thief", "pair", code, check=False)
    assert res.returncode == 1 and "refused" in res.stderr
    assert not box.status()["indexer"]["pairing"]["window_open"]
    listed = json.loads(box.cli("pairing", "list", "--json").stdout)
    assert [c["label"] for c in listed] == ["laptop"]

    # Paired: the Electrum core and the hearth.* methods answer.
    status = json.loads(run_client(laptop, "status").stdout)
    assert status["height"] == box.node.getblockcount()

    # Reset (the long press): the laptop's key is refused from now on.
    assert "1 clients revoked" in box.cli("pairing", "reset").stdout
    res = run_client(laptop, "status", check=False)
    assert res.returncode == 1
    assert box.status()["indexer"]["pairing"]["window_open"]


def test_wallet_registration_over_the_paired_channel(tmp_path: Path, box: IndexerProcess,
                                                     node: TestNode) -> None:
    phone = Keypair.generate()
    token = PairingPayload.decode(box.cli("pairing", "show").stdout.strip()).token.hex()
    node.createwallet("w1")
    [desc] = node.descriptors("w1", internal=False)
    replies = asyncio.run(noise_call(
        box, phone,
        {"method": "hearth.pair", "params": {"token": token, "label": "phone"}},
        {"method": "server.version", "params": ["phone", "1.6"]},
        {"method": "hearth.wallet.add", "params": {"descriptors": [desc]}},
        {"method": "hearth.wallet.list", "params": []},
        {"method": "hearth.wallet.add", "params": {"descriptors": ["wpkh(nonsense)"]}}))
    assert replies[0]["result"]["paired"] is True
    assert replies[1]["result"][1] == "1.6"
    assert replies[2]["result"]["new"] is True
    assert len(replies[3]["result"]) == 1
    assert "invalid descriptor" in replies[4]["error"]["message"]
    assert len(box.wallets()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not electrum_available(), reason="Debian's electrum is installed by setup")
def test_stock_electrum_through_the_tunnel(tmp_path: Path, box: IndexerProcess,
                                           node: TestNode) -> None:
    node.createwallet("w1")
    vpub = vpub_of(node.account_xpub("w1"))
    box.wallet_add(vpub)
    node.send(node.rpc("getnewaddress", wallet="w1"), "1.25")
    node.mine(1)
    box.wait_synced()
    desktop = tmp_path / "desktop"
    run_client(desktop, "pair", box.cli("pairing", "show").stdout.strip())
    port = free_port()
    tunnel = subprocess.Popen([CLIENT, "--state-dir", str(desktop), "tunnel", "--listen",
                               f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True)
    ew = ElectrumWallet(tmp_path / "electrum", vpub)
    try:
        assert "tunnel: 127.0.0.1:" in (tunnel.stdout.readline() if tunnel.stdout else "")
        ew.start(f"127.0.0.1:{port}:t")
        wait_until(lambda: ew.synced_to(node.getblockcount()) and ew.total() == 125_000_000,
                   timeout=60, interval=0.5)
        assert box.status()["indexer"]["pairing"]["connected"] >= 1
        # Reset: the open tunnel connection is dropped at once, and reconnects are refused.
        box.cli("pairing", "reset")
        wait_until(lambda: box.status()["indexer"]["pairing"]["connected"] == 0, timeout=10)
        wait_until(lambda: not ew.info().get("connected"), timeout=30, interval=0.5)
    finally:
        ew.stop()
        tunnel.terminate()
        tunnel.wait(timeout=10)
        if tunnel.stdout:
            tunnel.stdout.close()
