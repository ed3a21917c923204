"""Small well-formed transactions for the tower's unit tests (not valid on any chain:
the unit tests stop at the broadcast call; the functional tests use real bitcoind)."""

from __future__ import annotations

import os

from appliance.chain import Tx, parse_tx
from appliance.chain.encoding import hash_to_hex_str
from appliance.chain.tx import TxIn, TxOut, serialize_tx


def make_tx(spends: list[tuple[bytes, int]], n_outputs: int = 2) -> Tx:
    inputs = [TxIn(txid, vout, b"", 0xFFFFFFFD, [os.urandom(72), os.urandom(33)])
              for txid, vout in spends]
    outputs = [TxOut(10_000 + i, b"\x00\x14" + os.urandom(20)) for i in range(n_outputs)]
    return parse_tx(serialize_tx(2, inputs, outputs, 0))


def funding_and_breach() -> tuple[Tx, Tx]:
    funding = make_tx([(os.urandom(32), 0)], 1)
    breach = make_tx([(funding.txid, 0)], 2)
    return funding, breach


def display(txid: bytes) -> str:
    return hash_to_hex_str(txid)
