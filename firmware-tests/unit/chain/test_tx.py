"""Transaction parsing: real vectors, segwit edge cases, round trips and truncation fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.chain.encoding import (
    ByteReader,
    ChainParseError,
    double_sha256,
    hash_to_hex_str,
    write_varint,
)
from appliance.chain.tx import (
    COINBASE_PREV_IDX,
    NULL_HASH,
    Tx,
    TxIn,
    TxOut,
    parse_tx,
    read_tx,
    serialize_tx,
)

# Vectors from bitcoinjs-lib's test/fixtures/transaction.json (txid, virtualSize and
# weight as listed there). Witness transactions are given in their BIP144 form.

LEGACY_2IN_2OUT = bytes.fromhex(
    "0100000002f1fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe000000006b48304502"
    "2100e661badd8d2cf1af27eb3b82e61b5d3f5d5512084591796ae31487f5b82df948022006df3c2a2cac79f68e4b"
    "179f4bbb8185a0bb3c4a2486d4405c59b2ba07a74c2101210279be667ef9dcbbac55a06295ce870b07029bfcdb2d"
    "ce28d959f2815b16f81798fffffffff2fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe"
    "fe0100000083483045022100be54a46a44fb7e6bf4ebf348061d0dace7ddcbb92d4147ce181cf4789c7061f00220"
    "68ccab2a89a47fc29bb5074bca99ae846ab446eecf3c3aaeb238a13838783c78012102c6047f9441ed7d6d304540"
    "6e95c07cd85c778e4b8cef3ca7abac09b95c709ee517a9147ccb85f0ab2d599bc17246c98babd5a20b1cdc768700"
    "0000800250c30000000000001976a914c42e7ef92fdb603af844d064faad95db9bcdfd3d88acf049020000000000"
    "17a9147ccb85f0ab2d599bc17246c98babd5a20b1cdc768700000000"
)

P2SH_P2WSH_MULTISIG_TX = bytes.fromhex(
    "010000000001013a5a2ab0223d3b504b52af76d650329750666fbf1be13d4cb08d0d9fc550a47d00000000232200"
    "201b8c0c2878c5634c3ce738cdc568c592e99783dbd28ff4c6cb5b7b4675d9ee99ffffffff0160ea000000000000"
    "1976a914851a33a5ef0d4279bd5854949174e2c65b1d450088ac0300483045022100c97a5e205ce0023d3d44f846"
    "abf1f0e21b6f2646bd2496bbe92e4333fe4401be02201247e047d669f713582713e35d2eba430abc3d75a924bb50"
    "0362bf47d6234ed501255121038de63cf582d058a399a176825c045672d5ff8ea25b64d28d4375dcdb14c02b2b51"
    "ae00000000"
)

P2WPKH_TX = bytes.fromhex(
    "0100000000010133defbe3e28860007ff3e21222774c220cb35d554fa3e3796d25bf8ee983e1080000000000ffff"
    "ffff0160ea0000000000001976a914851a33a5ef0d4279bd5854949174e2c65b1d450088ac0248304502210097c3"
    "006f0b390982eb47f762b2853773c6cedf83668a22d710f4c13c4fd6b15502205e26ef16a81fc818a37f3a34fc6d"
    "0700e61100ea6c6773907c9c046042c440340121038de63cf582d058a399a176825c045672d5ff8ea25b64d28d43"
    "75dcdb14c02b2b00000000"
)

SEGWIT_COINBASE = bytes.fromhex(
    "020000000001010000000000000000000000000000000000000000000000000000000000000000ffffffff05022b"
    "020101ffffffff02c0cf402500000000232103c6c5964853fd00fb3271ac002831c66825102d223c706ce0ee99e7"
    "3db3be4aa1ac0000000000000000266a24aa21a9edff828eb21f40ab251d9f107792670aba9299028b894a364fda"
    "570f6a089dcfe90120000000000000000000000000000000000000000000000000000000000000000000000000"
)

# (raw, txid hex, size, base size, vsize, weight)
VECTORS = {
    "legacy-2in-2out": (
        LEGACY_2IN_2OUT,
        "fcdd6d89c43e76dcff94285d9b6e31d5c60cb5e397a76ebc4920befad30907bc",
        396,
        396,
        396,
        1584,
    ),
    "p2wpkh": (
        P2WPKH_TX,
        "10bbdf7e9301bc21f1da8684f25fd66bc1314904c30da25a8ebf967c58c89269",
        195,
        85,
        113,
        450,
    ),
    "p2sh-p2wsh-multisig": (
        P2SH_P2WSH_MULTISIG_TX,
        "e77fd9ea35346e295e1e15de9724fff42b5c127da4c5447a4ffddd361f66b1c1",
        235,
        120,
        149,
        595,
    ),
    "segwit-coinbase": (
        SEGWIT_COINBASE,
        "c881f7b084a367b0603abbcb9c5c639318e6166770e3f9b27a1ee3f8b6a16517",
        183,
        147,
        156,
        624,
    ),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vectors(name: str) -> None:
    raw, txid_hex, size, base_size, vsize, weight = VECTORS[name]
    tx = parse_tx(raw)
    assert hash_to_hex_str(tx.txid) == txid_hex
    assert tx.raw == raw
    assert (tx.size, tx.base_size, tx.vsize, tx.weight) == (size, base_size, vsize, weight)
    assert tx.is_segwit == (size != base_size)
    # The slice-hashed txid must equal the hash of an independent stripped re-serialisation.
    assert double_sha256(tx.serialize(include_witness=False)) == tx.txid
    assert tx.serialize() == raw
    if tx.is_segwit:
        assert tx.wtxid == double_sha256(raw) != tx.txid
    else:
        assert tx.wtxid == tx.txid


def test_legacy_fields() -> None:
    tx = parse_tx(LEGACY_2IN_2OUT)
    assert tx.version == 1
    assert tx.locktime == 0
    assert not tx.is_coinbase
    assert [hash_to_hex_str(i.prev_hash) for i in tx.inputs] == [
        "fe" * 31 + "f1",
        "fe" * 31 + "f2",
    ]
    assert [i.prev_idx for i in tx.inputs] == [0, 1]
    assert [i.sequence for i in tx.inputs] == [0xFFFFFFFF, 0x80000000]
    assert [len(i.script_sig) for i in tx.inputs] == [0x6B, 0x83]
    assert all(i.witness == [] for i in tx.inputs)
    assert [o.value for o in tx.outputs] == [50000, 150000]
    assert tx.outputs[0].script_pubkey.hex() == (
        "76a914c42e7ef92fdb603af844d064faad95db9bcdfd3d88ac"
    )
    assert tx.outputs[1].script_pubkey.hex() == "a9147ccb85f0ab2d599bc17246c98babd5a20b1cdc7687"


def test_segwit_fields() -> None:
    tx = parse_tx(P2SH_P2WSH_MULTISIG_TX)
    (txin,) = tx.inputs
    assert txin.script_sig.hex() == (
        "2200201b8c0c2878c5634c3ce738cdc568c592e99783dbd28ff4c6cb5b7b4675d9ee99"
    )
    assert [len(item) for item in txin.witness] == [0, 72, 37]
    assert txin.witness[2].hex() == (
        "5121038de63cf582d058a399a176825c045672d5ff8ea25b64d28d4375dcdb14c02b2b51ae"
    )
    assert tx.outputs == [
        TxOut(60000, bytes.fromhex("76a914851a33a5ef0d4279bd5854949174e2c65b1d450088ac"))
    ]


def test_coinbase() -> None:
    tx = parse_tx(SEGWIT_COINBASE)
    assert tx.is_coinbase
    assert tx.version == 2
    (txin,) = tx.inputs
    assert txin.is_coinbase
    assert txin.prev_hash == NULL_HASH
    assert txin.prev_idx == COINBASE_PREV_IDX
    assert txin.witness == [bytes(32)]  # the witness reserved value
    assert tx.outputs[1].script_pubkey[:6].hex() == "6a24aa21a9ed"


def test_accepts_any_buffer() -> None:
    for data in (bytearray(P2WPKH_TX), memoryview(P2WPKH_TX)):
        assert parse_tx(data) == parse_tx(P2WPKH_TX)


def test_read_tx_sequence() -> None:
    blob = b"junk" + LEGACY_2IN_2OUT + P2WPKH_TX + SEGWIT_COINBASE
    reader = ByteReader(blob, offset=4)
    txs = [read_tx(reader) for _ in range(3)]
    reader.expect_end()
    assert [tx.raw for tx in txs] == [LEGACY_2IN_2OUT, P2WPKH_TX, SEGWIT_COINBASE]
    assert txs[1].txid == parse_tx(P2WPKH_TX).txid


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(ChainParseError, match="trailing"):
        parse_tx(P2WPKH_TX + b"\x00")


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_prefix_is_rejected(name: str) -> None:
    raw = VECTORS[name][0]
    for cut in range(len(raw)):
        with pytest.raises(ChainParseError):
            parse_tx(raw[:cut])
        with pytest.raises(ChainParseError):
            read_tx(ByteReader(raw[:cut]))


def _legacy_body(n_inputs: int = 1) -> bytes:
    """Inputs and outputs of a small legacy tx, from the input count to the last output."""
    txin = bytes(32) + b"\x00\x00\x00\x00" + b"\x01\x51" + b"\xff\xff\xff\xff"
    txout = struct.pack("<q", 1000) + b"\x01\x51"
    return write_varint(n_inputs) + txin * n_inputs + b"\x01" + txout


def test_superfluous_witness_rejected() -> None:
    # Marker and flag present but every witness stack empty: bitcoind refuses this.
    raw = b"\x02\x00\x00\x00" + b"\x00\x01" + _legacy_body(2) + b"\x00\x00" + bytes(4)
    with pytest.raises(ChainParseError, match="superfluous"):
        parse_tx(raw)
    # The same with one non-empty stack is fine.
    ok = b"\x02\x00\x00\x00" + b"\x00\x01" + _legacy_body(2) + b"\x00\x01\x01\xaa" + bytes(4)
    tx = parse_tx(ok)
    assert [txin.witness for txin in tx.inputs] == [[], [b"\xaa"]]
    assert tx.base_size == len(ok) - 2 - 4


@pytest.mark.parametrize("flag", [b"\x00", b"\x02", b"\x03", b"\xff"])
def test_unknown_flag_rejected(flag: bytes) -> None:
    raw = b"\x01\x00\x00\x00" + b"\x00" + flag + _legacy_body() + b"\x01\x01\xaa" + bytes(4)
    with pytest.raises(ChainParseError, match="flag"):
        parse_tx(raw)


def test_segwit_without_inputs_rejected() -> None:
    raw = b"\x01\x00\x00\x00\x00\x01\x00\x00" + bytes(4)
    with pytest.raises(ChainParseError, match="without inputs"):
        parse_tx(raw)


@pytest.mark.parametrize(
    "count", [b"\xfe\xff\xff\xff\xff", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x05"]
)
def test_absurd_input_count_rejected_early(count: bytes) -> None:
    raw = b"\x01\x00\x00\x00" + count + _legacy_body()[1:] + bytes(4)
    with pytest.raises(ChainParseError):
        parse_tx(raw)


def test_non_canonical_script_length_rejected() -> None:
    raw = b"\x01\x00\x00\x00\x01" + bytes(36) + b"\xfd\x01\x00\x51" + bytes(4) + b"\x00" + bytes(4)
    with pytest.raises(ChainParseError, match="non-canonical"):
        parse_tx(raw)


def test_unsigned_version_and_signed_value() -> None:
    # Version is read unsigned (bitcoind >= 28); an output value is int64 like CAmount.
    raw = b"\xff\xff\xff\xff" + _legacy_body()[:-10] + struct.pack("<q", -1) + b"\x00" + bytes(4)
    tx = parse_tx(raw)
    assert tx.version == 0xFFFFFFFF
    assert tx.outputs[0].value == -1


# --------------------------------------------------------------------------- properties

_U32 = st.integers(0, 0xFFFFFFFF)
_SCRIPT = st.binary(max_size=300)  # long enough to exercise 3-byte compact sizes
_TXIN = st.builds(
    TxIn,
    prev_hash=st.binary(min_size=32, max_size=32),
    prev_idx=_U32,
    script_sig=_SCRIPT,
    sequence=_U32,
    witness=st.lists(_SCRIPT, max_size=4),
)
_TXOUT = st.builds(TxOut, value=st.integers(-(1 << 63), (1 << 63) - 1), script_pubkey=_SCRIPT)
_TX_PARTS = st.tuples(
    _U32, st.lists(_TXIN, min_size=1, max_size=4), st.lists(_TXOUT, max_size=4), _U32
)


@given(_TX_PARTS)
def test_serialize_parse_round_trip(parts: tuple[int, list[TxIn], list[TxOut], int]) -> None:
    version, inputs, outputs, locktime = parts
    raw = serialize_tx(version, inputs, outputs, locktime)
    stripped = serialize_tx(version, inputs, outputs, locktime, include_witness=False)
    tx = parse_tx(raw)
    assert (tx.version, tx.inputs, tx.outputs, tx.locktime) == parts
    assert tx.raw == raw
    assert tx.txid == double_sha256(stripped)
    assert tx.base_size == len(stripped)
    assert tx.is_segwit == any(txin.witness for txin in inputs)
    assert tx.wtxid == double_sha256(raw)
    assert tx.serialize() == raw


@given(_TX_PARTS, st.data())
def test_prefix_of_random_tx_is_rejected(
    parts: tuple[int, list[TxIn], list[TxOut], int], data: st.DataObject
) -> None:
    raw = serialize_tx(*parts)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ChainParseError):
        parse_tx(raw[:cut])


def _parse_or_error(raw: bytes) -> Tx | None:
    try:
        return parse_tx(raw)
    except ChainParseError:
        return None


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_only_raises_chain_parse_error(raw: bytes) -> None:
    tx = _parse_or_error(raw)
    if tx is not None:
        assert tx.raw == raw


@given(st.sampled_from(sorted(VECTORS)), st.data())
def test_corrupted_vector_only_raises_chain_parse_error(name: str, data: st.DataObject) -> None:
    raw = bytearray(VECTORS[name][0])
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    tx = _parse_or_error(bytes(raw))
    if tx is not None:
        assert tx.raw == raw
