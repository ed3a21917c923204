"""TEOS cryptography against rust-teos's and rust-lightning's published vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from appliance.chain.encoding import hex_str_to_hash
from appliance.tower.crypto import (
    SignatureError,
    decrypt_blob,
    encrypt_blob,
    locator_of,
    recover_user,
    sign_message,
    zbase32_decode,
    zbase32_encode,
)

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "teos_crypto.json").read_text())


def test_rust_teos_encryption_vector() -> None:
    v = VECTORS["encrypt"]
    txid = hex_str_to_hash(v["commitment_txid_display"])  # internal byte order
    tx = bytes.fromhex(v["penalty_tx"])
    assert encrypt_blob(tx, txid).hex() == v["encrypted_blob"]
    assert decrypt_blob(bytes.fromhex(v["encrypted_blob"]), txid) == tx
    # python-teos's (display-order) key does not open it: the byte order is the point.
    assert decrypt_blob(bytes.fromhex(v["encrypted_blob"]), txid[::-1]) is None


def test_locator_is_internal_order_prefix() -> None:
    txid = hex_str_to_hash(VECTORS["encrypt"]["commitment_txid_display"])
    assert locator_of(txid) == txid[:16]
    assert locator_of(txid).hex() == "b4a11e76c7115e2cd79526f3543e6bec"
    with pytest.raises(ValueError):
        locator_of(b"\x00" * 31)


def test_lightning_signmessage_vector() -> None:
    v = VECTORS["signmessage"]
    key = PrivateKey(bytes.fromhex(v["secret_key"]))
    assert sign_message(v["message"].encode(), key) == v["zbase32"]
    assert recover_user(v["message"].encode(), v["zbase32"]) == key.public_key.format()


def test_signature_of_other_message_recovers_other_key() -> None:
    key = PrivateKey()
    sig = sign_message(b"get subscription info", key)
    assert recover_user(b"get subscription info", sig) == key.public_key.format()
    assert recover_user(b"get appointment 00", sig) != key.public_key.format()


@pytest.mark.parametrize("bad", ["", "not zbase32!", "yy", "y" * 104, sign_message(b"x", PrivateKey())[:-4]])
def test_bad_signatures_raise(bad: str) -> None:
    with pytest.raises(SignatureError):
        recover_user(b"x", bad)


@given(st.binary(max_size=80))
def test_zbase32_roundtrip(data: bytes) -> None:
    assert zbase32_decode(zbase32_encode(data)) == data


def test_tampered_blob_does_not_decrypt() -> None:
    txid = bytes(range(32))
    blob = bytearray(encrypt_blob(b"penalty", txid))
    blob[0] ^= 1
    assert decrypt_blob(bytes(blob), txid) is None
