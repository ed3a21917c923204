"""Generate regtest chains full of varied transactions, with bitcoind's own wallet.

Used as ground truth for the parser and the indexer: every output type a wallet meets
(P2PKH, P2SH-P2WPKH, P2WPKH, P2WSH multisig, P2TR, OP_RETURN, bare multisig is not
relayed by Core policy), spends of each, multi-input and multi-output transactions,
and coinbases with a witness commitment.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from .node import TestNode

__all__ = ["MixedChain"]

ADDRESS_TYPES = ("legacy", "p2sh-segwit", "bech32", "bech32m")


class MixedChain:
    """Drives one node's wallets to build a chain of mixed transactions."""

    def __init__(self, node: TestNode, seed: int = 1) -> None:
        self.node = node
        self.rng = random.Random(seed)
        self.zoo = "zoo"  # a second wallet holding P2WSH multisig coins it can spend
        self._ms_index = 0
        self._setup_multisig_wallet()

    def _setup_multisig_wallet(self) -> None:
        node = self.node
        if self.zoo not in node.listwallets():
            node.createwallet(self.zoo)
        descs = node.rpc("listdescriptors", True, wallet=self.zoo)["descriptors"]
        # The wallet's own BIP84 receive xprv path, reused inside a 1-of-2 wsh(sortedmulti).
        wpkh = next(d["desc"] for d in descs
                    if d["desc"].startswith("wpkh(") and not d.get("internal"))
        key = wpkh[len("wpkh("):wpkh.index(")")]  # tprv.../84h/1h/0h/0/*
        other = key.replace("/0/*", "/1/*")
        # Import the private form so the wallet can sign spends (P2WSH witness inputs).
        private = f"wsh(sortedmulti(1,{key},{other}))"
        checksum = node.getdescriptorinfo(private)["checksum"]
        result = node.rpc("importdescriptors", [{
            "desc": f"{private}#{checksum}", "timestamp": "now", "range": [0, 999],
            "active": False,
        }], wallet=self.zoo)
        assert result[0]["success"], result
        self.ms_desc = f"{private}#{checksum}"

    def multisig_address(self) -> str:
        addr = self.node.deriveaddresses(self.ms_desc, [self._ms_index, self._ms_index])[0]
        self._ms_index += 1
        return str(addr)

    def random_payment(self) -> str:
        node, rng = self.node, self.rng
        kind = rng.choice(("single", "single", "many", "opreturn", "multisig", "zoo_spend",
                           "legacy_spend"))
        if kind == "single":
            addr = node.w("getnewaddress", "", rng.choice(ADDRESS_TYPES))
            return node.send(addr, Decimal(rng.randint(10_000, 5_000_000)) / 10**8)
        if kind == "many":
            outputs: dict[str, Any] = {}
            for _ in range(rng.randint(2, 8)):
                a = node.w("getnewaddress", "", rng.choice(ADDRESS_TYPES))
                outputs[a] = str(Decimal(rng.randint(10_000, 900_000)) / 10**8)
            return str(node.rpc("send", outputs, wallet=node.wallet)["txid"])
        if kind == "opreturn":
            addr = node.w("getnewaddress", "", "bech32m")
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))).hex()
            return str(node.rpc("send", [{addr: "0.001"}, {"data": data}],
                                wallet=node.wallet)["txid"])
        if kind == "multisig":
            return node.send(self.multisig_address(), Decimal(rng.randint(50_000, 2_000_000)) / 10**8)
        if kind == "legacy_spend":
            # Spend P2PKH / P2SH-P2WPKH coins on purpose: coin selection rarely would,
            # and their scriptSigs are what a parser most often gets wrong.
            legacy = [u for u in node.w("listunspent", 1)
                      if u.get("desc", "").startswith(("pkh(", "sh(wpkh("))][:3]
            if legacy:
                dest = node.w("getnewaddress", "", rng.choice(ADDRESS_TYPES))
                total = sum(Decimal(u["amount"]) for u in legacy)
                return str(node.rpc("send", {dest: str(total)}, None, "unset", None,
                                    {"inputs": [{"txid": u["txid"], "vout": u["vout"]}
                                                for u in legacy],
                                     "subtract_fee_from_outputs": [0], "add_inputs": False},
                                    wallet=node.wallet)["txid"])
            kind = "zoo_spend"
        # Spend the zoo wallet's multisig coins (P2WSH inputs), merging several.
        unspent = node.rpc("listunspent", 1, wallet=self.zoo)
        if not unspent:
            return node.send(self.multisig_address(), "0.05")
        dest = node.w("getnewaddress", "", rng.choice(ADDRESS_TYPES))
        total = sum(Decimal(u["amount"]) for u in unspent[:5])
        return str(node.rpc("send", {dest: str(total)}, None, "unset", None,
                            {"inputs": [{"txid": u["txid"], "vout": u["vout"]} for u in unspent[:5]],
                             "subtract_fee_from_outputs": [0], "add_inputs": False},
                            wallet=self.zoo)["txid"])

    def extend(self, blocks: int, max_txs: int = 6) -> list[str]:
        """Mine ``blocks`` blocks with 0..``max_txs`` random payments each."""
        hashes: list[str] = []
        for _ in range(blocks):
            for _ in range(self.rng.randint(0, max_txs)):
                self.random_payment()
            hashes += self.node.mine(1)
        return hashes
