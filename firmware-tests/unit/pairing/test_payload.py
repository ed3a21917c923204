"""Pairing payload: Base45 (RFC 9285 vectors), layout, QR size."""

from __future__ import annotations

import pytest
import segno
from hypothesis import given
from hypothesis import strategies as st

from appliance.identity import derive_secp256k1
from appliance.pairing.payload import PairingPayload, PayloadError, b45decode, b45encode


@pytest.mark.parametrize(("raw", "text"), [
    (b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
])
def test_base45_rfc9285_vectors(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@given(st.binary(max_size=64))
def test_base45_round_trip(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data


@pytest.mark.parametrize("bad", ["GGW", "A", "ZZZZ", "abc"])
def test_base45_rejects_bad_input(bad: str) -> None:
    with pytest.raises(PayloadError):
        b45decode(bad)


def example() -> PairingPayload:
    key = derive_secp256k1(bytes(32), "noise-static")
    return PairingPayload(key.public, "192.168.1.23", 50003, bytes(range(8)))


def test_payload_round_trip_and_fits_a_version_3_qr() -> None:
    payload = example()
    text = payload.encode()
    assert text.startswith("HEARTH:") and len(text) == 76
    assert PairingPayload.decode(text) == payload
    qr = segno.make(text, error="L", mode="alphanumeric", boost_error=False)
    assert qr.version <= 3 and qr.mode == "alphanumeric"


def test_payload_repr_hides_the_token() -> None:
    assert bytes(range(8)).hex() not in repr(example())


@pytest.mark.parametrize("bad", ["", "BITCOIN:abc", "HEARTH:", "HEARTH:BB8",
                                 "HEARTH:" + "0" * 69 + "a"])
def test_payload_rejects_garbage(bad: str) -> None:
    with pytest.raises(PayloadError):
        PairingPayload.decode(bad)


def test_payload_requires_even_key() -> None:
    odd = PairingPayload(b"\x03" + bytes(32), "10.0.0.1", 1, bytes(8))
    with pytest.raises(PayloadError, match="even"):
        odd.encode()
