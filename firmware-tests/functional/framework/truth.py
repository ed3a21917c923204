"""Ground truth for the index, computed the dumbest possible way from bitcoind's JSON.

``Truth`` walks every block with ``getblock <hash> 3`` (which resolves each input's
prevout) and the mempool with ``getrawtransaction``, and records, per scriptPubKey,
the transactions touching it and its unspent outputs. Independent of appliance.chain
and of the indexer; keeps the per-height block hashes so it follows reorgs, and keeps
what it learnt after bitcoind prunes the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .node import RPCError, TestNode

__all__ = ["Truth"]


def sats(value: Any) -> int:
    return int(Decimal(value) * 100_000_000)


@dataclass
class _Block:
    hash: str
    touches: list[tuple[str, int, str]]  # (script hex, position, txid)
    created: list[tuple[str, int, str, int]]  # (txid, vout, script, value)
    spent: list[tuple[str, int]]  # outpoints


@dataclass
class Truth:
    node: TestNode
    scripts: set[str]
    blocks: dict[int, _Block] = field(default_factory=dict)

    def update(self) -> None:
        tip = int(self.node.getblockcount())
        for h in [h for h in self.blocks if h > tip]:
            del self.blocks[h]
        # Walk back over replaced blocks (a reorg), then forward.
        start = tip + 1
        for h in sorted(self.blocks, reverse=True):
            if self.node.getblockhash(h) == self.blocks[h].hash:
                break
            del self.blocks[h]
            start = h
        start = min(start, max(self.blocks) + 1 if self.blocks else 0)
        for h in range(start, tip + 1):
            self.blocks[h] = self._scan(self.node.getblock(self.node.getblockhash(h), 3))

    def _scan(self, block: dict[str, Any]) -> _Block:
        out = _Block(block["hash"], [], [], [])
        for pos, tx in enumerate(block["tx"]):
            touched: set[str] = set()
            for vin in tx["vin"]:
                if "coinbase" in vin:
                    continue
                spk = vin["prevout"]["scriptPubKey"]["hex"]
                if spk in self.scripts:
                    touched.add(spk)
                    out.spent.append((vin["txid"], vin["vout"]))
            for vout in tx["vout"]:
                spk = vout["scriptPubKey"]["hex"]
                if spk in self.scripts:
                    touched.add(spk)
                    out.created.append((tx["txid"], vout["n"], spk, sats(vout["value"])))
            out.touches += [(s, pos, tx["txid"]) for s in sorted(touched)]
        return out

    def mempool(self) -> list[dict[str, Any]]:
        """Our mempool txs: txid, fee (sats), height (0/-1), touched scripts, created, spent."""
        pool = set(self.node.getrawmempool())
        result = []
        for txid in pool:
            try:
                tx = self.node.getrawtransaction(txid, 1)
                entry = self.node.getmempoolentry(txid)
            except RPCError:
                continue  # mined or evicted meanwhile
            touched, created, spent = set(), [], []
            unconfirmed = False
            for vin in tx["vin"]:
                if vin["txid"] in pool:
                    unconfirmed = True
                    prev = self.node.getrawtransaction(vin["txid"], 1)["vout"][vin["vout"]]
                else:
                    prev = self.node.gettxout(vin["txid"], vin["vout"], False)
                spk = prev["scriptPubKey"]["hex"] if prev else None
                if spk in self.scripts:
                    touched.add(spk)
                    spent.append((vin["txid"], vin["vout"]))
            for vout in tx["vout"]:
                if vout["scriptPubKey"]["hex"] in self.scripts:
                    touched.add(vout["scriptPubKey"]["hex"])
                    created.append((txid, vout["n"], vout["scriptPubKey"]["hex"],
                                    sats(vout["value"])))
            if touched:
                result.append({"txid": txid, "fee": sats(entry["fees"]["base"]),
                               "height": -1 if unconfirmed else 0, "touched": touched,
                               "created": created, "spent": spent})
        return result

    def electrum_view(self) -> dict[str, dict[str, Any]]:
        """Per script: Electrum's get_history, listunspent and get_balance answers."""
        self.update()
        mempool = self.mempool()
        view: dict[str, dict[str, Any]] = {s: {"history": [], "unspent": {}, "confirmed": 0,
                                               "unconfirmed": 0} for s in self.scripts}
        spent_in_block = {op for b in self.blocks.values() for op in b.spent}
        spent_in_mempool = {op for m in mempool for op in m["spent"]}
        for h in sorted(self.blocks):
            b = self.blocks[h]
            for script, _pos, txid in b.touches:
                view[script]["history"].append({"tx_hash": txid, "height": h})
            for txid, n, script, value in b.created:
                if (txid, n) in spent_in_block:
                    continue
                view[script]["confirmed"] += value
                if (txid, n) in spent_in_mempool:
                    view[script]["unconfirmed"] -= value
                else:
                    view[script]["unspent"][(txid, n)] = {"tx_hash": txid, "tx_pos": n,
                                                          "height": h, "value": value}
        for m in sorted(mempool, key=lambda m: (-m["height"], m["txid"])):
            for script in m["touched"]:
                view[script]["history"].append({"tx_hash": m["txid"], "height": m["height"],
                                                "fee": m["fee"]})
            for txid, n, script, value in m["created"]:
                view[script]["unconfirmed"] += value
                if (txid, n) in spent_in_mempool:
                    view[script]["unconfirmed"] -= value
                else:
                    view[script]["unspent"][(txid, n)] = {"tx_hash": txid, "tx_pos": n,
                                                          "height": 0, "value": value}
        return view
