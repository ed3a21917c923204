"""The tower's request semantics (Electrum RPC and TEOS) on a real LevelDB store."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from appliance.tower.api import TeosError, TowerAPI, TowerLimits
from appliance.tower.crypto import encrypt_blob, locator_of, recover_user, sign_message
from appliance.tower.store import TowerStore

from .helpers import display, funding_and_breach, make_tx


class Box:
    def __init__(self, path: Path) -> None:
        self.store = TowerStore(path)
        self.key = PrivateKey()
        self.height = 500
        self.api = TowerAPI(self.store, self.key, lambda: self.height,
                            TowerLimits(slots=3, subscription_blocks=100, max_blob_bytes=2048))

    def rpc(self, method: str, *params: Any, raw: bytes | None = None) -> dict[str, Any]:
        body = raw if raw is not None else json.dumps(
            {"jsonrpc": "2.0", "id": "7", "method": method, "params": list(params)}).encode()
        return self.api.electrum_rpc(body)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = Box(tmp_path / "db")
    yield b
    b.store.close()


def test_get_ctn_registers_and_counts(box: Box) -> None:
    funding, breach = funding_and_breach()
    outpoint = f"{display(funding.txid)}:0"
    assert box.rpc("get_ctn", outpoint, "bcrt1qexampleaddress0000")["result"] == 0
    assert box.store.counters["channels"] == 1
    sweep = make_tx([(breach.txid, 1)], 1)
    for ctn in (1, 2, 5):
        reply = box.rpc("add_sweep_tx", outpoint, ctn, f"{display(breach.txid)}:1", sweep.raw.hex())
        assert reply == {"jsonrpc": "2.0", "id": "7", "result": None}
    assert box.rpc("get_ctn", outpoint, "bcrt1qexampleaddress0000")["result"] == 5
    assert box.store.counters["sweeps"] == 3
    assert [s.ctn for s in box.store.sweeps_spending(breach.txid)] == [1, 2, 5]
    assert box.store.has_locator(locator_of(breach.txid))


@pytest.mark.parametrize("params, message", [
    (["nothex:0", 1, "00" * 32 + ":0", "00"], "funding_outpoint"),
    (["00" * 32 + ":0", -1, "00" * 32 + ":0", "00"], "ctn"),
    (["00" * 32 + ":0", True, "00" * 32 + ":0", "00"], "ctn"),
    (["00" * 32 + ":0", 1, "00" * 32, "00"], "prevout"),
    (["00" * 32 + ":0", 1, "00" * 32 + ":0", "zz"], "hex"),
    (["00" * 32 + ":0", 1, "00" * 32 + ":0", "0200"], "not a transaction"),
    (["00" * 32 + ":0", 1, "00" * 32 + ":0", "00" * 3000], "larger than"),
    (["00" * 32 + ":0", 1], "wrong number"),
])
def test_add_sweep_tx_rejects_bad_params(box: Box, params: list[Any], message: str) -> None:
    reply = box.rpc("add_sweep_tx", *params)
    assert reply["error"]["code"] == -32602
    assert message in reply["error"]["message"]
    assert box.store.counters["sweeps"] == 0


def test_sweep_must_spend_the_prevout(box: Box) -> None:
    funding, breach = funding_and_breach()
    other = make_tx([(os.urandom(32), 0)], 1)
    reply = box.rpc("add_sweep_tx", f"{display(funding.txid)}:0", 1, f"{display(breach.txid)}:0",
                    other.raw.hex())
    assert "does not spend prevout" in reply["error"]["message"]


@pytest.mark.parametrize("raw, code", [
    (b"{not json", -32700), (b"[1, 2]", -32600), (b'{"id": 1}', -32600),
    (b'{"id": 1, "method": "get_ctn", "params": {"a": 1}}', -32602),
    (b'{"id": 1, "method": "drop_everything", "params": []}', -32601),
    (b"\xff\xfe", -32700),
])
def test_garbage_json_rpc(box: Box, raw: bytes, code: int) -> None:
    assert box.rpc("", raw=raw)["error"]["code"] == code


def _register(box: Box, key: PrivateKey) -> dict[str, Any]:
    return box.api.register(json.dumps({"user_id": key.public_key.format().hex()}).encode())


def _appointment(key: PrivateKey, commitment_txid: bytes, penalty: bytes, delay: int = 144
                 ) -> tuple[bytes, str]:
    locator = locator_of(commitment_txid)
    blob = encrypt_blob(penalty, commitment_txid)
    sig = sign_message(locator + blob + struct.pack(">I", delay), key)
    body = {"appointment": {"locator": locator.hex(), "encrypted_blob": blob.hex(),
                            "to_self_delay": delay}, "signature": sig}
    return json.dumps(body).encode(), sig


def test_register_receipt_is_signed_by_the_tower(box: Box) -> None:
    user = PrivateKey()
    reply = _register(box, user)
    assert reply["available_slots"] == 3
    assert reply["subscription_start"] == 500 and reply["subscription_expiry"] == 600
    receipt = user.public_key.format() + struct.pack(">II", 3, 600)
    assert recover_user(receipt, reply["subscription_signature"]) == box.key.public_key.format()
    assert _register(box, user)["available_slots"] == 6  # registering again adds slots


def test_appointment_flow_and_receipts(box: Box) -> None:
    user = PrivateKey()
    _register(box, user)
    _, breach = funding_and_breach()
    penalty = make_tx([(breach.txid, 0)], 1)
    body, sig = _appointment(user, breach.txid, penalty.raw)
    reply = box.api.add_appointment(body)
    assert reply["start_block"] == 500 and reply["available_slots"] == 2
    assert recover_user(sig.encode() + struct.pack(">I", 500), reply["signature"]) == \
        box.key.public_key.format()
    stored = box.store.appointments_at(locator_of(breach.txid))
    assert [a.user for a in stored] == [user.public_key.format()]
    # Replacing the same locator costs no new slot.
    assert box.api.add_appointment(_appointment(user, breach.txid, penalty.raw, 200)[0])[
        "available_slots"] == 2
    locator = locator_of(breach.txid).hex()
    get = json.dumps({"locator": locator, "signature": sign_message(
        f"get appointment {locator}".encode(), user)}).encode()
    status, found = box.api.get_appointment(get)
    assert status == 200 and found["status"] == "being_watched"
    assert found["appointment"]["to_self_delay"] == 200
    info = box.api.get_subscription_info(json.dumps(
        {"signature": sign_message(b"get subscription info", user)}).encode())
    assert info["locators"] == [locator] and info["available_slots"] == 2
    # Another registered user cannot see it.
    other = PrivateKey()
    _register(box, other)
    get_other = json.dumps({"locator": locator, "signature": sign_message(
        f"get appointment {locator}".encode(), other)}).encode()
    assert box.api.get_appointment(get_other)[0] == 404


def test_unregistered_expired_and_out_of_slots(box: Box) -> None:
    user = PrivateKey()
    with pytest.raises(TeosError) as err:
        box.api.add_appointment(_appointment(user, os.urandom(32), b"tx")[0])
    assert (err.value.status, err.value.code) == (401, 7)
    _register(box, user)
    for _ in range(3):
        box.api.add_appointment(_appointment(user, os.urandom(32), b"tx")[0])
    with pytest.raises(TeosError, match="slots"):
        box.api.add_appointment(_appointment(user, os.urandom(32), b"tx")[0])
    box.height = 601
    with pytest.raises(TeosError, match="expired"):
        box.api.add_appointment(_appointment(user, os.urandom(32), b"tx")[0])


@pytest.mark.parametrize("body, code", [
    (b"", 6), (b"[]", 3), (b"{}", 1),
    (b'{"appointment": {"locator": "", "encrypted_blob": "00", "to_self_delay": 1}, "signature": "x"}', 2),
    (b'{"appointment": {"locator": "0011", "encrypted_blob": "00", "to_self_delay": 1}, '
     b'"signature": "x"}', 4),
    (b'{"appointment": {"locator": "zz' + b"0" * 30 + b'", "encrypted_blob": "00", "to_self_delay": 1}, '
     b'"signature": "x"}', 5),
    (b'{"appointment": {"locator": "' + b"0" * 32 + b'", "encrypted_blob": "' + b"00" * 2049
     + b'", "to_self_delay": 1}, "signature": "x"}', 34),
    (b'{"appointment": {"locator": "' + b"0" * 32 + b'", "encrypted_blob": "00", "to_self_delay": "1"}, '
     b'"signature": "x"}', 3),
    (b'{"appointment": {"locator": "' + b"0" * 32 + b'", "encrypted_blob": "00", "to_self_delay": 1}, '
     b'"signature": "not-a-signature"}', 7),
])
def test_add_appointment_bad_input(box: Box, body: bytes, code: int) -> None:
    with pytest.raises(TeosError) as err:
        box.api.add_appointment(body)
    assert err.value.code == code
    assert box.store.counters["appointments"] == 0


def test_register_rejects_non_keys(box: Box) -> None:
    for user_id, code in (("02" + "00" * 32, 5), ("00" * 32, 4), (7, 3)):
        with pytest.raises(TeosError) as err:
            box.api.register(json.dumps({"user_id": user_id}).encode())
        assert err.value.code == code


def test_electrum_quotas_refuse_new_records_but_accept_known_ones(tmp_path: Path) -> None:
    store = TowerStore(tmp_path / "db")
    api = TowerAPI(store, PrivateKey(), lambda: 500,
                   TowerLimits(max_channels=2, max_sweeps=3))

    def rpc(method: str, *params: Any) -> dict[str, Any]:
        return api.electrum_rpc(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                            "params": list(params)}).encode())
    channels = [funding_and_breach() for _ in range(3)]
    points = [f"{display(f.txid)}:0" for f, _ in channels]
    assert rpc("get_ctn", points[0], "bcrt1qexampleaddress0000")["result"] == 0
    assert rpc("get_ctn", points[1], "bcrt1qexampleaddress0000")["result"] == 0
    full = rpc("get_ctn", points[2], "bcrt1qexampleaddress0000")["error"]
    assert full["code"] == -32000 and "tower.max_channels" in full["message"]
    # A known channel still answers; its sweeps fill the sweep quota.
    assert rpc("get_ctn", points[0], "bcrt1qexampleaddress0000")["result"] == 0
    _, breach = channels[0]
    prevout = f"{display(breach.txid)}:1"
    sweep = make_tx([(breach.txid, 1)], 1).raw.hex()
    for ctn in (1, 2, 3):
        assert rpc("add_sweep_tx", points[0], ctn, prevout, sweep)["result"] is None
    refused = rpc("add_sweep_tx", points[0], 4, prevout, sweep)["error"]
    assert refused["code"] == -32000 and "tower.max_sweeps" in refused["message"]
    # Re-sending a stored sweep (Electrum retries) is not refused; a new channel via
    # add_sweep_tx is.
    assert rpc("add_sweep_tx", points[0], 3, prevout, sweep)["result"] is None
    assert "max_channels" in rpc("add_sweep_tx", points[2], 1, prevout, sweep)["error"]["message"]
    assert store.counters["sweeps"] == 3 and store.counters["channels"] == 2
    assert store.counters["refused_full"] == 3
    store.close()


def test_teos_quotas_on_users_and_appointments(tmp_path: Path) -> None:
    store = TowerStore(tmp_path / "db")
    box_key = PrivateKey()
    api = TowerAPI(store, box_key, lambda: 500,
                   TowerLimits(slots=10, max_users=1, max_appointments=2))
    alice, bob = PrivateKey(), PrivateKey()

    def register(user: PrivateKey) -> dict[str, Any]:
        return api.register(json.dumps({"user_id": user.public_key.format().hex()}).encode())
    register(alice)
    with pytest.raises(TeosError) as err:
        register(bob)
    assert (err.value.status, err.value.code) == (503, 7) and "max_users" in err.value.message
    assert register(alice)["available_slots"] == 20  # renewing a known user is not refused
    breaches = [os.urandom(32) for _ in range(3)]
    api.add_appointment(_appointment(alice, breaches[0], b"tx")[0])
    api.add_appointment(_appointment(alice, breaches[1], b"tx")[0])
    with pytest.raises(TeosError, match="max_appointments"):
        api.add_appointment(_appointment(alice, breaches[2], b"tx")[0])
    api.add_appointment(_appointment(alice, breaches[1], b"tx2")[0])  # an update still fits
    assert store.counters["appointments"] == 2
    store.close()
