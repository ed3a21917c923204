"""An in-memory ``ElectrumBackend`` for the protocol tests.

The chain is Bitcoin mainnet's first nine headers (0..8), so ``cp_height`` proofs can be
checked against the example in the spec's ``protocol-methods.rst``. The watched script is
the spec's status example (``protocol-basics.rst``), with its history.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.chain import parse_tx
from appliance.chain.encoding import hash_to_hex_str, hex_str_to_hash
from appliance.electrum.backend import (
    BackendError,
    HistoryItem,
    MerkleProof,
    ScripthashListener,
    TipListener,
    Utxo,
)

__all__ = [
    "EXAMPLE_BLOCK_2473",
    "EXAMPLE_HISTORY",
    "EXAMPLE_RAW_TX",
    "EXAMPLE_SCRIPTHASH",
    "EXAMPLE_STATUS",
    "MAINNET_HEADERS",
    "FakeBackend",
    "merkle_branch",
    "rev",
    "sha256d",
]

MAINNET_HEADERS = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b2"
    "7ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c",
    "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4ba744"
    "bbbe680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299",
    "010000004860eb18bf1b1620e37e9490fc8a427514416fd75159ab86688e9a8300000000d5fdcc541e25de1c"
    "7a5addedf24858b8bb665c9f36ef744ee42c316022c90f9bb0bc6649ffff001d08d2bd61",
    "01000000bddd99ccfda39da1b108ce1a5d70038d0a967bacb68b6b63065f626a0000000044f672226090d85d"
    "b9a9f2fbfe5f0f9609b387af7be5b7fbb7a1767c831c9e995dbe6649ffff001d05e0ed6d",
    "010000004944469562ae1c2c74d9a535e00b6f3e40ffbad4f2fda3895501b582000000007a06ea98cd40ba2e"
    "3288262b28638cec5337c1456aaf5eedc8e9e5a20f062bdf8cc16649ffff001d2bfee0a9",
    "0100000085144a84488ea88d221c8bd6c059da090e88f8a2c99690ee55dbba4e00000000e11c48fecdd9e725"
    "10ca84f023370c9a38bf91ac5cae88019bee94d24528526344c36649ffff001d1d03e477",
    "01000000fc33f596f822a0a1951ffdbf2a897b095636ad871707bf5d3162729b00000000379dfb96a5ea8c81"
    "700ea4ac6b97ae9a9312b2d4301a29580e924ee6761a2520adc46649ffff001d189c4c97",
    "010000008d778fdc15a2d3fb76b7122a3b5582bea4f21f5a0c693537e7a03130000000003f674005103b42f9"
    "84169c7d008370967e91920a6a5d64fd51282f75bc73a68af1c66649ffff001d39a59c86",
    "010000004494c8cf4154bdcc0720cd4a59d9c9b285e4b146d45f061d2b6c967100000000e3855ed886605b6d"
    "4a99d5fa2ef2e9b0b164e63df3c4136bebf2d0dac0f1f7a667c86649ffff001d1c4b5666",
)]


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def rev(display_hex: str) -> bytes:
    """Display hex -> internal-order bytes."""
    return hex_str_to_hash(display_hex)


def merkle_branch(leaves: list[bytes], index: int) -> tuple[list[bytes], bytes]:
    """Branch (leaf level first) and root, bitcoind style (odd levels pair the last node)."""
    branch: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[index ^ 1])
        index //= 2
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return branch, level[0]


# protocol-basics.rst "Status Example" (regtest).
# Scripthash bytes as appliance.chain.script_to_scripthash makes them: wire hex, decoded.
EXAMPLE_SCRIPTHASH = bytes.fromhex(
    "f04bf26fc16a27abaa2f10540da7a24e369e6ec408f2d901202a7c0cd4a6112d")
EXAMPLE_STATUS = "78e96c6562cafa71c115503b9411fdfdc595a45031e2ab76ff75162fe1b0590d"
EXAMPLE_HISTORY = [
    HistoryItem(rev("a6c9c361bd0bc536d6a22648efbf8f9b200e425ef6c3a7a9669dc444c532a347"), 2472),
    HistoryItem(rev("9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c"), 2473),
    HistoryItem(rev("770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30"), 2473),
    HistoryItem(rev("80b19848aed792565ab7c5a79b7c2a00fbf985741579396ebe0ab6098e607311"), 0, 200),
    HistoryItem(rev("e02a1dadfa83b996b24175df807b271ea5d02937ef5b35c195fac1e1bdc3198f"), 0, 300),
    HistoryItem(rev("bb4c8ab438c13b89ca80d1d5bee25b0b6b7f55673f4d801998ba97db161d9e85"), -1, 200),
]


# The first transaction of that example (segwit, two inputs): its txid is the first entry.
EXAMPLE_RAW_TX = bytes.fromhex(
    "02000000000102f758cda73a362840995d62d0079a22a11fc2652cb7740fffb8132486fe76fe730000000000"
    "fdffffff31b2d3d434d7c8f46b23a47aabc3c9498d4df5ffb9f13e13c3c3ecb52ab570b80000000000fdffff"
    "ff0280f0fa02000000001600149f9aa3795e57c535d2f7b160ff023804c60fca6ef0cff00800000000160014"
    "553a3b97c2cc7d3d4edeace3281ff038bd067629024730440220274cf69bab8d6fd25bd047ef7420274f5854"
    "0c32f2cbc12944134e604d2307a7022035a8954b44cbc6b048f4457080a7bcaf903bd970ee8bd297f1ef2545"
    "1a464c280121027ba4d3ee6471a985307a37d09eb9a0a73c1a31b57616fe3e53a3d6d4540025190247304402"
    "205a879e8678c331e4f00a282e629fc048ce2ec0107452ecc19773f4c144c725af02204495325f83cfc987e4"
    "e9a090c361cfe11b63173a9b7a5ce498f3924f11ec416a0121027ba4d3ee6471a985307a37d09eb9a0a73c1a"
    "31b57616fe3e53a3d6d454002519a7090000")
# Block 2473 of that regtest chain, as far as the example's get_merkle answers reveal it.
EXAMPLE_BLOCK_2473 = [
    rev("9b977e4cc0b2eb44cb5ea2adb30bf6eae892c9a838111031cb49c97d8ad57309"),
    EXAMPLE_HISTORY[1].txid,
    EXAMPLE_HISTORY[2].txid,
]


class FakeBackend:
    """Implements ``ElectrumBackend`` from dicts the tests fill in."""

    def __init__(self) -> None:
        self.chain: list[bytes] = list(MAINNET_HEADERS)
        self.watched: set[bytes] = {EXAMPLE_SCRIPTHASH}
        self.histories: dict[bytes, list[HistoryItem]] = {EXAMPLE_SCRIPTHASH:
                                                          list(EXAMPLE_HISTORY)}
        self.balances: dict[bytes, tuple[int, int]] = {EXAMPLE_SCRIPTHASH: (103873966, -5000)}
        self.utxos: dict[bytes, list[Utxo]] = {EXAMPLE_SCRIPTHASH: [
            Utxo(EXAMPLE_HISTORY[1].txid, 0, 2473, 45318048),
            Utxo(EXAMPLE_HISTORY[4].txid, 1, 0, 919195),
        ]}
        self.txs: dict[bytes, bytes] = {EXAMPLE_HISTORY[0].txid: EXAMPLE_RAW_TX}
        self.blocks: dict[int, list[bytes]] = {2473: list(EXAMPLE_BLOCK_2473)}
        self.gap: set[bytes] = set()  # scripts that become watched once queried
        self.queried: list[bytes] = []
        self.watch_requests: list[bytes] = []  # watch_script calls (subscribes to unknowns)
        self.refuse_watch: set[bytes] = set()
        self.broadcasts: list[bytes] = []
        self.rejections: dict[bytes, str] = {}  # raw tx -> bitcoind's reason
        self.fee_estimates: list[tuple[int, str | None]] = []
        self.fee_rate = 0.00101079
        self.history_calls = 0
        self.history_delay = 0.0
        # Runs inside history() after the snapshot is taken: lets a test change the
        # data (or block) exactly while a status is being computed.
        self.history_hook: Callable[[bytes], Awaitable[None]] | None = None
        self.tip_listeners: list[TipListener] = []
        self.scripthash_listeners: list[ScripthashListener] = []

    # --- ElectrumBackend ---------------------------------------------------------------

    @property
    def genesis_hash(self) -> bytes:
        return sha256d(self.chain[0])

    def tip(self) -> tuple[int, bytes]:
        return len(self.chain) - 1, self.chain[-1]

    async def headers(self, start_height: int, count: int) -> list[bytes]:
        return self.chain[start_height:start_height + count]

    async def header_branch(self, height: int, cp_height: int) -> tuple[list[bytes], bytes]:
        hashes = [sha256d(h) for h in self.chain[:cp_height + 1]]
        return merkle_branch(hashes, height)

    async def history(self, scripthash: bytes) -> list[HistoryItem]:
        self.history_calls += 1
        snapshot = list(self.histories.get(scripthash, []))
        if self.history_hook is not None:
            await self.history_hook(scripthash)
        if self.history_delay:
            await asyncio.sleep(self.history_delay)
        return snapshot

    async def mempool(self, scripthash: bytes) -> list[HistoryItem]:
        return [i for i in self.histories.get(scripthash, []) if i.height <= 0]

    async def balance(self, scripthash: bytes) -> tuple[int, int]:
        return self.balances.get(scripthash, (0, 0))

    async def unspent(self, scripthash: bytes) -> list[Utxo]:
        return list(self.utxos.get(scripthash, []))

    async def transaction(self, txid: bytes) -> bytes:
        try:
            return self.txs[txid]
        except KeyError:
            raise BackendError("No such mempool or blockchain transaction", 2) from None

    async def transaction_verbose(self, txid: bytes) -> dict[str, Any]:
        raw = await self.transaction(txid)
        return {"txid": hash_to_hex_str(txid), "hex": raw.hex(), "confirmations": 3}

    async def merkle_proof(self, txid: bytes, height: int) -> MerkleProof:
        txids = self.blocks.get(height, [])
        if txid not in txids:
            raise BackendError(f"tx {hash_to_hex_str(txid)} not in block at height {height}")
        pos = txids.index(txid)
        return MerkleProof(height, pos, merkle_branch(txids, pos)[0])

    async def id_from_pos(self, height: int, pos: int) -> tuple[bytes, list[bytes]]:
        txids = self.blocks.get(height, [])
        if pos >= len(txids):
            raise BackendError(f"no tx at position {pos:,d} in block at height {height:,d}")
        return txids[pos], merkle_branch(txids, pos)[0]

    async def broadcast(self, raw_tx: bytes) -> bytes:
        if raw_tx in self.rejections:
            raise BackendError(self.rejections[raw_tx], 1)
        self.broadcasts.append(raw_tx)
        return sha256d(raw_tx)

    async def broadcast_package(self, raw_txs: list[bytes]) -> dict[str, Any]:
        """Like bitcoind's submitpackage: every tx in tx-results, errors per tx."""
        results: dict[str, Any] = {}
        for raw in raw_txs:
            tx = parse_tx(raw)
            txid = hash_to_hex_str(tx.txid)
            entry: dict[str, Any] = {"txid": txid}
            if raw in self.rejections:
                entry["error"] = self.rejections[raw]
            else:
                self.broadcasts.append(raw)
            results[hash_to_hex_str(tx.wtxid)] = entry
        failed = any("error" in r for r in results.values())
        return {"package_msg": "transaction failed" if failed else "success",
                "tx-results": results, "replaced-transactions": []}

    async def estimate_fee(self, blocks: int, mode: str | None) -> float:
        self.fee_estimates.append((blocks, mode))
        return self.fee_rate if blocks > 1 else -1.0

    async def relay_fee(self) -> float:
        return 0.00001

    async def fee_histogram(self) -> list[tuple[float, int]]:
        return [(12.0, 128812), (4.0, 92524), (2.0, 6478638), (1.0, 22890421)]

    async def mempool_info(self) -> dict[str, Any]:
        return {"mempoolminfee": 0.00001, "minrelaytxfee": 0.00001,
                "incrementalrelayfee": 0.00001}

    def is_watched(self, scripthash: bytes) -> bool:
        return scripthash in self.watched

    async def script_queried(self, scripthash: bytes) -> None:
        self.queried.append(scripthash)
        if scripthash in self.gap:
            self.watched.add(scripthash)

    def watch_script(self, scripthash: bytes) -> bool:
        self.watch_requests.append(scripthash)
        if scripthash in self.watched or scripthash in self.refuse_watch:
            return False
        self.watched.add(scripthash)  # the index knows nothing about it yet: no history
        return True

    def add_listeners(self, on_tip: TipListener, on_scripthashes: ScripthashListener) -> None:
        self.tip_listeners.append(on_tip)
        self.scripthash_listeners.append(on_scripthashes)

    # --- test drivers --------------------------------------------------------------------

    async def add_block(self, header: bytes) -> None:
        self.chain.append(header)
        height, tip = self.tip()
        for listener in self.tip_listeners:
            await listener(height, tip)

    async def announce(self, *scripthashes: bytes) -> None:
        for listener in self.scripthash_listeners:
            await listener(set(scripthashes))
