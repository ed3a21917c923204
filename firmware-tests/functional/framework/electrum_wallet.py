"""Debian's real Electrum wallet (4.3.x), headless in regtest, as the Electrum client.

``ElectrumWallet`` restores a watching-only wallet from an extended public key, runs
the daemon against one server (``--oneserver --server host:port:t|s``) and reads
balance, history and UTXOs through Electrum's own command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["ElectrumWallet", "electrum_available", "vpub_of"]


def electrum_available() -> bool:
    return shutil.which("electrum") is not None


def vpub_of(tpub: str) -> str:
    """A BIP84 account tpub as the vpub Electrum expects for a native segwit wallet."""
    from appliance.chain import base58check_decode, base58check_encode

    return base58check_encode(bytes.fromhex("045f1cf6") + base58check_decode(tpub)[4:])


class ElectrumWallet:
    def __init__(self, directory: Path, key: str) -> None:
        self.dir = directory
        self.key = key
        self.running = False
        self.run("restore", key, "--offline")

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        res = subprocess.run(["electrum", "--regtest", "-D", str(self.dir), *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"electrum {' '.join(args)}: {res.stdout}{res.stderr}")
        return res.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args))

    def start(self, server: str, proxy: str | None = None) -> None:
        """``server`` is host:port:t (TCP) or host:port:s (TLS); ``proxy`` e.g.
        ``socks5:127.0.0.1:9050`` (Electrum's own syntax) for an onion server."""
        self.run("daemon", "-d", "--oneserver", "--server", server,
                 *(["--proxy", proxy] if proxy else []))
        self.running = True
        self.run("load_wallet")

    def stop(self) -> None:
        if self.running:
            self.run("stop", check=False)
            self.running = False

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.json("getinfo")
        return info

    def synced_to(self, height: int) -> bool:
        info = self.info()
        return bool(info.get("connected") and info.get("blockchain_height") == height)

    def total(self) -> int:
        bal = self.json("getbalance")
        return sum(int(Decimal(bal.get(k, "0")) * 100_000_000)
                   for k in ("confirmed", "unconfirmed"))

    def history(self) -> set[tuple[str, int]]:
        """(txid, height): unconfirmed as 0; Electrum's "local" txs (-2: no longer
        known to the server) stay -2 so a comparison shows them."""
        txs = self.json("onchain_history")["transactions"]
        return {(t["txid"], 0 if int(t["height"]) == -1 else int(t["height"])) for t in txs}

    def utxos(self) -> set[tuple[str, int, int]]:
        return {(u["prevout_hash"], int(u["prevout_n"]),
                 int(Decimal(u["value"]) * 100_000_000)) for u in self.json("listunspent")}
