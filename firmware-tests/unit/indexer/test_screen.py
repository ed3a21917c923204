"""The byte-level block screen gives exactly the full parse's matches.

Blocks are built here from ``serialize_tx`` (the parser's own tests check that against
real mainnet blocks), with a correct merkle root, so they are what bitcoind would hand
over; the property test draws random ones; the functional test
``test_indexer_screen.py`` does the same on real regtest blocks.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.chain import parse_block, parse_tx
from appliance.chain.encoding import ChainParseError, write_varint
from appliance.chain.merkle import MerkleTree, merkle_root, merkle_root_and_mutation
from appliance.chain.tx import NULL_HASH, TxIn, TxOut, serialize_tx
from appliance.indexer.matcher import TxMatch, iter_matches, outpoint
from appliance.indexer.screen import screen_block

WALLET = bytes.fromhex("0014") + bytes(range(20))  # a P2WPKH script of "the wallet"
OTHER = bytes.fromhex("0014") + bytes(20)


def _tx(inputs: list[TxIn], outputs: list[TxOut]) -> bytes:
    return serialize_tx(2, inputs, outputs, 0)


def _txid(raw: bytes) -> bytes:
    """The txid of a serialised transaction (stripped of witnesses)."""
    return parse_tx(raw).txid


def _coinbase(outputs: list[TxOut], witness: bool = True) -> bytes:
    return _tx([TxIn(NULL_HASH, 0xFFFFFFFF, b"\x01\x02", 0xFFFFFFFF,
                     [bytes(32)] if witness else [])], outputs)


def _block(txs: list[bytes]) -> bytes:
    root = merkle_root([_txid(t) for t in txs])
    header = struct.pack("<i32s32sIII", 0x20000000, bytes(32), root, 0, 0x207FFFFF, 0)
    return header + write_varint(len(txs)) + b"".join(txs)


def _summary(matches: list[TxMatch]) -> list[tuple[object, ...]]:
    return [(m.pos, m.tx.txid, m.tx.raw,
             [(f.vout, f.script, f.scripthash, f.value) for f in m.funding],
             [(s.prev_txid, s.prev_vout, s.scripthash, s.value) for s in m.spending])
            for m in matches]


def _both(raw: bytes, scripts: set[bytes],
          known: dict[bytes, tuple[bytes, int]]) -> tuple[list[tuple[object, ...]], ...]:
    """(full parse's matches, screen's matches) for one block."""
    full = [m for m in iter_matches(parse_block(raw).txs, scripts.__contains__, known.get)
            if m is not None]
    funded = {op[:32] for op in known}
    sb = screen_block(raw, scripts, funded)
    screened = [m for m in iter_matches(sb.txs, scripts.__contains__, known.get, sb.positions)
                if m is not None]
    assert sb.txids == [t.txid for t in parse_block(raw).txs]
    return _summary(full), _summary(screened)


def _spend(prev: bytes, vout: int, outputs: list[TxOut], *, segwit: bool,
           script_sig: bytes = b"") -> bytes:
    return _tx([TxIn(prev, vout, script_sig, 0xFFFFFFFE, [b"\x30" * 71, b"\x02" * 33]
                     if segwit else [])], outputs)


def test_funding_and_spending_in_one_block_segwit_and_legacy() -> None:
    fund = _spend(b"\x11" * 32, 0, [TxOut(5_000, OTHER), TxOut(7_000, WALLET)], segwit=False)
    fund_id = _txid(fund)
    spend = _spend(fund_id, 1, [TxOut(6_000, OTHER)], segwit=True)  # spends ours in-block
    unrelated = _spend(b"\x22" * 32, 3, [TxOut(1, OTHER)], segwit=True)
    raw = _block([_coinbase([TxOut(50, OTHER)]), unrelated, fund, spend])
    full, screened = _both(raw, {WALLET}, {})
    assert screened == full
    assert [m[0] for m in full] == [2, 3]


def test_spend_of_an_output_from_an_earlier_block() -> None:
    prev = b"\x33" * 32
    known = {outpoint(prev, 4): (b"\x44" * 32, 9_000)}
    other_vout = _spend(prev, 5, [TxOut(1, OTHER)], segwit=False)  # same txid, not ours
    ours = _spend(prev, 4, [TxOut(1, OTHER)], segwit=True)
    raw = _block([_coinbase([TxOut(50, OTHER)]), other_vout, ours])
    full, screened = _both(raw, set(), known)
    assert screened == full
    assert [m[0] for m in full] == [2]


def test_coinbase_paying_the_wallet_segwit_and_not() -> None:
    for witness in (True, False):
        raw = _block([_coinbase([TxOut(50, WALLET), TxOut(0, b"\x6a\x24" + bytes(36))],
                                witness=witness)])
        full, screened = _both(raw, {WALLET}, {})
        assert screened == full and [m[0] for m in full] == [0]


def test_wallet_script_inside_data_does_not_match() -> None:
    """The script's bytes (and a wallet txid's) inside a witness, a scriptSig, an
    OP_RETURN and another output script are not payments to it (nor spends)."""
    ours = b"\x99" * 32  # a txid with a wallet output, known from earlier blocks
    push = bytes([len(WALLET)]) + WALLET + b"\x20" + ours
    txs = [
        _coinbase([TxOut(50, OTHER)]),
        _tx([TxIn(b"\x55" * 32, 0, push, 0, [WALLET, push])], [TxOut(1, OTHER)]),
        _spend(b"\x56" * 32, 0, [TxOut(1, OTHER)], segwit=False, script_sig=push + push),
        _spend(b"\x57" * 32, 0, [TxOut(0, b"\x6a" + push)], segwit=True),
        _spend(b"\x58" * 32, 0, [TxOut(1, b"\xa9" + push + b"\x87"),
                                  TxOut(2, WALLET[:-1]), TxOut(3, WALLET + b"\x00")],
               segwit=True),
    ]
    raw = _block(txs)
    full, screened = _both(raw, {WALLET}, {})
    assert screened == full == []
    full, screened = _both(raw, {WALLET}, {outpoint(ours, 0): (b"\x01" * 32, 1)})
    assert screened == full == []


def test_many_inputs_and_outputs_and_every_compact_size_width() -> None:
    # 300 outputs / inputs: 3-byte counts; a 300-byte and a 70,000-byte scriptSig and
    # witness item: 3- and 5-byte lengths; the wallet output is the last of 300.
    outs = [TxOut(i, OTHER) for i in range(299)] + [TxOut(299, WALLET)]
    many_out = _spend(b"\x61" * 32, 0, outs, segwit=True)
    ins = [TxIn(b"\x62" * 32, i, b"\x51" * 300 if i == 7 else b"", 0,
                [b"\x00" * (70_000 if i == 3 else 72)]) for i in range(300)]
    many_in = _tx(ins + [TxIn(_txid(many_out), 299, b"", 0, [b"\x01"])], [TxOut(1, OTHER)])
    big_sig = _spend(b"\x63" * 32, 0, [TxOut(1, WALLET)], segwit=False,
                     script_sig=b"\x52" * 70_000)
    raw = _block([_coinbase([TxOut(50, OTHER)]), many_out, many_in, big_sig])
    full, screened = _both(raw, {WALLET}, {})
    assert screened == full
    assert [m[0] for m in full] == [1, 2, 3]


def test_rescreen_finds_a_script_added_afterwards() -> None:
    late = bytes.fromhex("0014") + b"\x77" * 20
    pay_late = _spend(b"\x71" * 32, 0, [TxOut(1, late)], segwit=True)
    raw = _block([_coinbase([TxOut(50, OTHER)]), pay_late])
    scripts: set[bytes] = {WALLET}
    sb = screen_block(raw, scripts, set())
    assert sb.positions == [] and not sb.pays_any({WALLET})
    assert sb.pays_any({late})
    scripts.add(late)
    sb.rescreen()
    assert sb.positions == [1] and sb.txs[0].raw == pay_late


def test_refuses_what_the_full_parse_refuses() -> None:
    good = _block([_coinbase([TxOut(50, OTHER)]),
                   _spend(b"\x81" * 32, 0, [TxOut(1, WALLET)], segwit=True)])
    bad_root = good[:36] + bytes(32) + good[68:]
    no_witness = _tx([TxIn(b"\x82" * 32, 0, b"", 0, [])], [TxOut(1, OTHER)])
    superfluous = no_witness[:4] + b"\x00\x01" + no_witness[4:-4] + b"\x00" + no_witness[-4:]
    huge_count = good[:80] + b"\xff" + (1 << 40).to_bytes(8, "little") + good[81:]
    non_canonical = good[:80] + b"\xfd\x02\x00" + good[81:]
    for raw in (bad_root, good + b"\x00", good[:-1], good[:-30], huge_count, non_canonical,
                _block([_coinbase([TxOut(1, OTHER)])])[:80] + b"\x01" + superfluous):
        with pytest.raises(ChainParseError):
            parse_block(raw)
        with pytest.raises(ChainParseError):
            screen_block(raw, {WALLET}, set())


def test_mutated_tree_is_refused() -> None:
    a = _spend(b"\x91" * 32, 0, [TxOut(1, OTHER)], segwit=False)
    b = _spend(b"\x92" * 32, 0, [TxOut(1, OTHER)], segwit=False)
    cb = _coinbase([TxOut(50, OTHER)])
    # [cb, a, b] and [cb, a, b, b] share a root: the second must be refused.
    raw = _block([cb, a, b])
    dup = raw[:80] + b"\x04" + raw[81:] + b
    with pytest.raises(ChainParseError, match="mutated"):
        parse_block(dup)
    with pytest.raises(ChainParseError, match="mutated"):
        screen_block(dup, set(), set())


# --- property: random blocks, random wallets ---------------------------------------------

_SCRIPTS = [bytes.fromhex("0014") + bytes([i]) * 20 for i in range(6)] + [
    bytes.fromhex("76a914") + b"\x09" * 20 + bytes.fromhex("88ac"),  # P2PKH
    b"\x6a\x04abcd",  # OP_RETURN
    b"",  # empty script
    bytes.fromhex("5120") + b"\x0a" * 32,  # P2TR
]


def _random_block(rng: random.Random, known_txids: list[bytes]) -> bytes:
    txs = [_coinbase([TxOut(50, rng.choice(_SCRIPTS))], witness=rng.random() < 0.5)]
    made: list[tuple[bytes, int]] = []
    for _ in range(rng.randrange(1, 25)):
        inputs = []
        for _ in range(rng.choice((1, 1, 2, 3, 260))):
            if made and rng.random() < 0.4:
                prev, n = rng.choice(made)
                vout = rng.randrange(n)
            else:
                prev = rng.choice(known_txids) if known_txids and rng.random() < 0.5 \
                    else rng.randbytes(32)
                vout = rng.randrange(4)
            sig = rng.choice((b"", rng.randbytes(rng.choice((1, 107, 300)))))
            inputs.append(TxIn(prev, vout, sig, rng.randrange(1 << 32), []))
        if rng.random() < 0.6:
            for txin in inputs:
                txin.witness = [rng.choice(_SCRIPTS) or b"\x01", rng.randbytes(33)]
            inputs[-1].witness.append(b"\x00" * rng.choice((0, 10, 260)))
        outputs = [TxOut(rng.randrange(1 << 40), rng.choice(_SCRIPTS))
                   for _ in range(rng.choice((1, 2, 3, 255)))]
        raw = _tx(inputs, outputs)
        made.append((_txid(raw), len(outputs)))
        txs.append(raw)
    return _block(txs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1 << 32), wallet=st.sets(st.sampled_from(_SCRIPTS), max_size=4))
def test_screen_equals_full_parse_on_random_chains(seed: int, wallet: set[bytes]) -> None:
    rng = random.Random(seed)
    known: dict[bytes, tuple[bytes, int]] = {}
    txids: list[bytes] = []
    for _ in range(3):  # a short chain: spends of outputs found in earlier blocks
        raw = _random_block(rng, txids)
        full, screened = _both(raw, wallet, known)
        assert screened == full
        for pos, txid, _raw, funding, _spending in full:
            assert isinstance(txid, bytes) and isinstance(funding, list) and pos is not None
            for vout, _script, sh, value in funding:
                known[outpoint(txid, vout)] = (sh, value)
        txids += [t.txid for t in parse_block(raw).txs]


@given(st.lists(st.sampled_from([bytes([i]) * 32 for i in range(4)]), min_size=1, max_size=40))
def test_tree_mutation_flag_equals_bitcoinds_rule(leaves: list[bytes]) -> None:
    """``MerkleTree.mutated`` (the screen's check) against ``merkle_root_and_mutation``
    (the full parse's), on lists full of repeats: odd levels' padding is no mutation."""
    tree = MerkleTree(leaves)
    assert (tree.root, tree.mutated) == merkle_root_and_mutation(leaves)
