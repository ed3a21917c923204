"""Hearth side by side with ElectrumX 1.20.0 and bitcoind's wallet rescan, on one chain.

    .venv/bin/python firmware-tests/bench/vs_electrumx.py [--skip-curve]

The chain is sidechain.py's (built once, cached under .cache/bench/): 60,000 background
transactions and a P2WPKH wallet of 5,000 transactions. ElectrumX comes from PyPI
(``e-x==1.20.0``, spesmilo's fork) in its own venv under .cache/bench/ex-venv.

One run: check all three against bitcoind's truth (the blocks, read with
``getblock 2``), then print ratios: Hearth's add-wallet-to-full-history vs ElectrumX's
whole-chain sync and vs Core's ``importdescriptors`` rescan (the wallet is added over
the control socket, as the setup page does; "every history fetched" is a client asking
for all of them with up to 100 requests in flight, as Electrum's synchronizer does, and
the same for ElectrumX; one-at-a-time round trips are shown too); notification latency;
get_history / get_balance latency with 1 and 20 clients; RSS; disk; the longest
event-loop stall (a ``server.ping`` every 10 ms) while adding a 10,000-script wallet,
connecting a 3,000-transaction block and taking in 5,000 mempool transactions; and
add-wallet time for 1,000 to 10,000 scripts. Asserts nothing: it measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import sidechain  # noqa: E402
from blockgen import CACHE, bindir  # noqa: E402
from functional.framework.appliance import ElectrumClient, IndexerProcess  # noqa: E402
from functional.framework.node import TestNode  # noqa: E402
from functional.framework.util import free_port, wait_until  # noqa: E402

from appliance.chain import address_to_script, script_to_address  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.control import ask, control_request  # noqa: E402
from appliance.control.messages import WalletAdd  # noqa: E402

EX_VENV = CACHE / "ex-venv"
EX_VERSION = "1.20.0"


def sh_hex(script: bytes) -> str:
    return hashlib.sha256(script).digest()[::-1].hex()


def pct(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    return statistics.median(v) * 1000, v[min(len(v) - 1, int(len(v) * 0.99))] * 1000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# --- the servers ------------------------------------------------------------------------
class ElectrumX:
    def __init__(self, work: Path, node: TestNode) -> None:
        self.db = work / "electrumx-db"
        self.db.mkdir(parents=True)
        self.port = free_port()
        self.log = work / "electrumx.log"
        self.node = node
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cookie = self.node.cookie_file.read_text().strip()
        self.env = {**os.environ, "COIN": "Bitcoin", "NET": "regtest", "DB_ENGINE": "leveldb",
                    "DB_DIRECTORY": str(self.db), "DAEMON_URL":
                    f"http://{cookie}@127.0.0.1:{self.node.rpc_port}/",
                    "SERVICES": f"tcp://127.0.0.1:{self.port}", "PEER_DISCOVERY": "off",
                    "PEER_ANNOUNCE": "", "CACHE_MB": "400", "LOG_LEVEL": "info",
                    "ALLOW_ROOT": "1",  # the bench machine runs as root
                    # No cost throttling: it sleeps ~1 s per request once a client has
                    # asked a few hundred, which would measure the throttle, not the index.
                    "COST_SOFT_LIMIT": "100000000", "COST_HARD_LIMIT": "200000000"}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([str(EX_VENV / "bin" / "python"), "-c", _EX_MAIN],
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def client(self) -> ElectrumClient:
        c = ElectrumClient(self.port, timeout=15)
        c.call("server.version", "hearth-bench", "1.4")
        return c

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


#: electrumx_server, with its traffic-analysis padding off: it holds each small reply
#: up to 1 s hoping to fill a 1 KiB packet, which would time the padding, not the index
#: (a wallet pipelining requests fills the packet anyway).
_EX_MAIN = """
import sys
from electrumx.server.transport import PaddedRSTransport
PaddedRSTransport.WAIT_FOR_BUFFER_GROWTH_SECONDS = 0.0
from electrumx.cli.electrumx_server import main
sys.exit(main())
"""


def ensure_electrumx() -> None:
    if (EX_VENV / "bin" / "electrumx_server").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(EX_VENV)], check=True)
    subprocess.run([str(EX_VENV / "bin" / "pip"), "install", "-q", f"e-x=={EX_VERSION}",
                    "plyvel"], check=True)


class StallProbe(threading.Thread):
    """``server.ping`` every 10 ms; the longest round trip in a window is the stall."""

    def __init__(self, client: ElectrumClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.samples: list[tuple[float, float]] = []
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            t = time.perf_counter()
            self.client.call("server.ping")
            self.samples.append((t, time.perf_counter() - t))
            time.sleep(0.01)

    def longest(self, since: float, until: float) -> float:
        inside = [rtt for t, rtt in self.samples if since <= t <= until]
        return max(inside, default=0.0) * 1000


def wait_live(hearth: IndexerProcess, height: int) -> None:
    """Every wallet live at ``height``, polled over the control socket (in-process: a
    CLI subprocess per poll would eat the CPU being measured)."""
    endpoint = load_config(hearth.config).control_endpoint("indexer")

    def done() -> bool:
        if control_request(endpoint, "status")["height"] != height:
            return False
        return all(w["state"] == "live" and not w["jobs"]
                   for w in control_request(endpoint, "wallet.list"))
    wait_until(done, timeout=3600, interval=0.05)


# --- truth --------------------------------------------------------------------------------
def truth_histories(node: TestNode, scripts: set[bytes]) -> dict[bytes, list[list[Any]]]:
    """Per script: [[txid, height], ...] in block order, from bitcoind's blocks."""
    outs: dict[tuple[str, int], bytes] = {}
    hist: dict[bytes, list[list[Any]]] = {s: [] for s in scripts}
    tip = node.getblockcount()
    for height in range(tip + 1):
        block = node.getblock(node.getblockhash(height), 2)
        for tx in block["tx"]:
            touched: set[bytes] = set()
            for vin in tx["vin"]:
                s = outs.get((vin.get("txid", ""), vin.get("vout", -1)))
                if s is not None:
                    touched.add(s)
            for vout in tx["vout"]:
                s = bytes.fromhex(vout["scriptPubKey"]["hex"])
                if s in scripts:
                    touched.add(s)
                    outs[(tx["txid"], vout["n"])] = s
            for s in touched:
                hist[s].append([tx["txid"], height])
    return hist


def wallet_scripts(node: TestNode, descs: list[str], counts: list[int]) -> list[bytes]:
    out = []
    for desc, n in zip(descs, counts, strict=True):
        out += [address_to_script(a, "regtest") for a in node.deriveaddresses(desc, [0, n - 1])]
    return out


def fetch_all(client: ElectrumClient, scripts: list[bytes]) -> dict[bytes, list[list[Any]]]:
    out = {}
    for n, s in enumerate(scripts):
        try:
            out[s] = [[h["tx_hash"], h["height"]] for h in
                      client.call("blockchain.scripthash.get_history", sh_hex(s))]
        except TimeoutError:
            raise RuntimeError(f"no answer to request {n}") from None
    return out


def fetch_pipelined(client: ElectrumClient, scripts: list[bytes], window: int = 100
                    ) -> dict[bytes, list[list[Any]]]:
    """Every history, as a stock Electrum wallet asks: up to ``window`` requests in flight
    on one connection (Electrum 4's ``_network_request_semaphore`` is 100), answers
    matched by id, rather than one round trip after another as ``fetch_all``."""
    out: dict[bytes, list[list[Any]]] = {}
    by_id: dict[int, bytes] = {}
    sent = 0

    def send(upto: int) -> int:
        nonlocal sent
        lines = []
        while sent < upto:
            client.next_id += 1
            by_id[client.next_id] = scripts[sent]
            lines.append(json.dumps({"jsonrpc": "2.0", "id": client.next_id, "method":
                                     "blockchain.scripthash.get_history",
                                     "params": [sh_hex(scripts[sent])]}).encode() + b"\n")
            sent += 1
        if lines:
            client.send_raw(b"".join(lines))
        return sent
    send(min(window, len(scripts)))
    while by_id:
        msg = client.read()
        if msg.get("id") not in by_id:
            continue  # a notification
        if msg.get("error"):
            raise RuntimeError(f"get_history failed: {msg['error']}")
        out[by_id.pop(msg["id"])] = [[h["tx_hash"], h["height"]] for h in msg["result"]]
        send(min(len(scripts), sent + 1))
    return out


def latency(clients: list[ElectrumClient], method: str, scripts: list[bytes],
            per_client: int) -> tuple[float, float]:
    """Each client (its own thread) asks ``per_client`` scripts; p50/p99 of each call."""
    samples: list[float] = []
    lock = threading.Lock()

    def work(i: int, c: ElectrumClient) -> None:
        mine = []
        for k in range(per_client):
            s = scripts[(i * 97 + k) % len(scripts)]
            t = time.perf_counter()
            c.call(method, sh_hex(s))
            mine.append(time.perf_counter() - t)
        with lock:
            samples.extend(mine)
    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pct(samples)


def notify_latency(node: TestNode, clients: dict[str, ElectrumClient], addresses: list[str],
                   payer: Callable[[str], None]) -> dict[str, list[float]]:
    """Pay each address; time from bitcoind's acceptance to each server's notification."""
    for c in clients.values():
        for a in addresses:
            c.call("blockchain.scripthash.subscribe", sh_hex(address_to_script(a, "regtest")))
    result: dict[str, list[float]] = {name: [] for name in clients}
    for a in addresses:
        payer(a)
        sent = time.perf_counter()
        for name, c in clients.items():
            c.wait_notification("blockchain.scripthash.subscribe", timeout=60)
            result[name].append(time.perf_counter() - sent)
    return result


# --- transactions made here (the funder's coinbases are still unspent) -------------------
class Funder:
    def __init__(self, node: TestNode) -> None:
        self.node = node
        self.key = sidechain.Key.of(hashlib.sha256(b"hearth bench funder").digest())
        self.next_height = 100  # sidechain.py split coinbases from height 1 up to 64

    def coins(self, n: int, value: int = 100_000) -> list[sidechain.Coin]:
        """``n`` confirmed coins (mined here)."""
        made: list[sidechain.Coin] = []
        splits = []
        while len(made) < n:
            block = self.node.getblock(self.node.getblockhash(self.next_height), 2)
            self.next_height += 1
            cb = block["tx"][0]
            total = int(cb["vout"][0]["value"] * 100_000_000)
            per = min(2_500, n - len(made), (total - 10_000) // value)
            raw, txid = sidechain.sign_tx(
                [sidechain.Coin(bytes.fromhex(cb["txid"])[::-1], 0, total, self.key)],
                [(self.key.script, value)] * per + [(self.key.script, total - 10_000 - per * value)])
            splits.append(raw)
            made += [sidechain.Coin(txid, i, value, self.key) for i in range(per)]
        self.node.rpc("generateblock", self.sink, [r.hex() for r in splits])
        return made

    @property
    def sink(self) -> str:
        return str(script_to_address(b"\x00\x14" + bytes(20), "regtest"))

    def payments(self, coins: list[sidechain.Coin], to: bytes | None = None) -> list[bytes]:
        out = []
        for i, c in enumerate(coins):
            script = to or b"\x00\x14" + hashlib.sha256(i.to_bytes(4, "big")).digest()[:20]
            out.append(sidechain.sign_tx([c], [(script, c.value - 500)])[0])
        return out


# --- the run ---------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wallet-txs", type=int, default=5_000)
    p.add_argument("--background", type=int, default=60_000)
    p.add_argument("--blocks", type=int, default=850)
    p.add_argument("--skip-curve", action="store_true")
    args = p.parse_args()
    ensure_electrumx()
    chain = sidechain.build(args.wallet_txs, args.background, args.blocks)
    meta = json.loads((chain / "meta.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="hearth-vs-ex-"))
    shutil.copytree(chain / "data", work / "node")
    node = TestNode(0, work / "node", bindir(), sidechain.NODE_ARGS, prune=False)
    ex = ElectrumX(work, node)
    hearth = IndexerProcess(work / "appliance", node)
    # The bench measures the service, not its debug logging; its 20 clients, the stall
    # probe and the fetcher all come from 127.0.0.1 (a box allows 16 per address).
    hearth.config.write_text(hearth.config.read_text()
                             .replace('level = "debug"', 'level = "info"')
                             .replace("[electrum]\n", "[electrum]\nsessions_per_address = 64\n"))
    rows: list[tuple[str, str]] = []

    def row(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"  {name:<58} {value}", flush=True)

    try:
        node.start()
        height = node.getblockcount()
        descs = meta["wallet_descriptors"]
        counts = [meta["receive_scripts"] + 20, meta["change_scripts"] + 20]
        scripts = wallet_scripts(node, descs, counts)
        print(f"chain: {height} blocks, {args.background} background and "
              f"{args.wallet_txs} wallet transactions, {len(scripts)} wallet scripts "
              f"({chain.name})", flush=True)
        t = time.perf_counter()
        truth = truth_histories(node, set(scripts))
        truth_txids = {tx for h in truth.values() for tx, _ in h}
        print(f"truth read from bitcoind in {time.perf_counter() - t:.1f} s: "
              f"{len(truth_txids)} wallet transactions", flush=True)

        # bitcoind's wallet: import the descriptors, rescan from genesis.
        node.rpc("createwallet", "core", True, True)
        node._close()  # the kept-alive connection has the default timeout; this takes longer
        t = time.perf_counter()
        res = node.rpc("importdescriptors", [{"desc": d, "timestamp": 0, "range": [0, n],
                                              "active": False} for d, n in zip(descs, counts,
                                                                               strict=True)],
                       wallet="core", timeout=1800)
        core_s = time.perf_counter() - t
        assert all(r["success"] for r in res), res
        core_txs = {e["txid"] for e in node.rpc("listtransactions", "*", 1_000_000, 0, True,
                                                wallet="core")}
        core_ok = core_txs == truth_txids
        node.unloadwallet("core")

        # ElectrumX: whole-chain sync.
        t = time.perf_counter()
        ex.start()

        def ex_synced() -> bool:
            assert ex.process is not None
            if ex.process.poll() is not None:
                raise RuntimeError(f"ElectrumX exited; see {ex.log}")
            try:
                c = ex.client()
            except OSError:
                return False
            try:
                return bool(c.call("blockchain.headers.subscribe")["height"] == height)
            finally:
                c.close()
        wait_until(ex_synced, timeout=3600, interval=0.2)
        ex_sync_s = time.perf_counter() - t
        ex_client = ex.client()
        t = time.perf_counter()
        ex_hist = fetch_pipelined(ex_client, scripts)
        ex_fetch_s = time.perf_counter() - t
        ex_ok = ex_hist == truth

        # Hearth: headers, then add the wallet: time until every history is served.
        hearth.start()
        hearth.wait_synced(timeout=600)
        client = hearth.client()
        probe = StallProbe(hearth.client())
        probe.start()
        # Added over the control socket from here, as the setup page does (`appliance
        # wallet add` is the same request after ~0.2 s of its own Python start-up).
        endpoint = load_config(hearth.config).control_endpoint("indexer")
        t = time.perf_counter()
        bench_wallet = ask(endpoint, WalletAdd(descs, birthday=0)).wallet.id
        wait_live(hearth, height)
        live_s = time.perf_counter() - t
        hearth_hist = fetch_pipelined(client, scripts)
        add_s = time.perf_counter() - t
        add_stall = probe.longest(t, time.perf_counter())
        hearth_ok = hearth_hist == truth
        # One round trip after another (the bench's own simple client, not how a wallet
        # asks: latency-bound), then once more pipelined and warm; each on a fresh
        # connection: both servers slow down a connection that has asked thousands of
        # questions (cost limits; ElectrumX's are switched off above, Hearth's are not
        # configurable).
        t = time.perf_counter()
        seq_hist = fetch_all(hearth.client(), scripts)
        seq_s = time.perf_counter() - t
        t = time.perf_counter()
        ex_seq_hist = fetch_all(ex.client(), scripts)
        ex_seq_s = time.perf_counter() - t
        hearth_ok = hearth_ok and seq_hist == truth
        ex_ok = ex_ok and ex_seq_hist == truth
        t = time.perf_counter()
        fetch_pipelined(hearth.client(), scripts)
        warm_s = time.perf_counter() - t
        t = time.perf_counter()
        fetch_pipelined(ex.client(), scripts)
        ex_warm_s = time.perf_counter() - t

        print("\nresults", flush=True)
        row("truth: histories agree (Hearth / ElectrumX / Core)",
            f"{hearth_ok} / {ex_ok} / {core_ok}")
        row("Hearth add wallet -> live (history complete)", f"{live_s:.1f} s")
        row("Hearth add wallet -> every history fetched (pipelined)", f"{add_s:.1f} s")
        row("ElectrumX whole-chain sync", f"{ex_sync_s:.1f} s")
        row("ElectrumX sync + every history fetched (pipelined)",
            f"{ex_sync_s + ex_fetch_s:.1f} s")
        row("Core importdescriptors (rescan from genesis)", f"{core_s:.1f} s")
        row("ratio add-wallet (every history fetched) / ElectrumX sync",
            f"{add_s / ex_sync_s:.2f}")
        row("ratio add-wallet -> live / ElectrumX sync", f"{live_s / ex_sync_s:.2f}")
        row("ratio add-wallet / ElectrumX sync, both incl. the fetch",
            f"{add_s / (ex_sync_s + ex_fetch_s):.2f}")
        row("ratio add-wallet / Core rescan", f"{add_s / core_s:.2f}")
        row("fetch every history one round trip at a time, Hearth / ElectrumX",
            f"{seq_s:.2f} s / {ex_seq_s:.2f} s")
        row("fetch every history again (pipelined, warm), Hearth / ElectrumX",
            f"{warm_s:.2f} s / {ex_warm_s:.2f} s")
        row("longest stall while this wallet was added", f"{add_stall:.0f} ms")

        # Query latency, 1 and 20 clients.
        for method in ("blockchain.scripthash.get_history", "blockchain.scripthash.get_balance"):
            for n in (1, 20):
                hc = [hearth.client() for _ in range(n)]
                ec = [ex.client() for _ in range(n)]
                h50, h99 = latency(hc, method, scripts, 300 if n == 1 else 60)
                e50, e99 = latency(ec, method, scripts, 300 if n == 1 else 60)
                for c in ec:
                    c.close()
                short = method.rsplit(".", 1)[1]
                row(f"{short} p50/p99, {n} client(s), Hearth vs ElectrumX",
                    f"{h50:.1f}/{h99:.1f} ms vs {e50:.1f}/{e99:.1f} ms "
                    f"(p50 ratio {h50 / e50:.2f})")

        # Notification latency: payments to wallet addresses, both servers subscribed.
        funder = Funder(node)
        pay_coins = funder.coins(20)
        addresses = [script_to_address(s, "regtest") or "" for s in scripts[:20]]
        raws = {a: funder.payments([c], address_to_script(a, "regtest"))[0]
                for a, c in zip(addresses, pay_coins, strict=True)}
        lat = notify_latency(node, {"hearth": client, "ex": ex_client}, addresses,
                             lambda a: node.sendrawtransaction(raws[a].hex()))
        h50, h99 = pct(lat["hearth"])
        e50, e99 = pct(lat["ex"])
        row("payment -> notification p50/p99, Hearth vs ElectrumX",
            f"{h50:.1f}/{h99:.1f} ms vs {e50:.0f}/{e99:.0f} ms")
        node.rpc("generateblock", funder.sink, [])
        hearth.wait_synced(timeout=600)

        # Stalls: a 3,000-transaction block, then 5,000 mempool transactions in a burst.
        coins = funder.coins(8_000)
        hearth.wait_synced(timeout=600)
        block_txs = funder.payments(coins[:3_000])
        t = time.perf_counter()
        node.rpc("generateblock", funder.sink, [r.hex() for r in block_txs], timeout=600)
        hearth.wait_synced(timeout=600)
        time.sleep(0.5)
        row("longest stall, connecting a 3,000-transaction block",
            f"{probe.longest(t, time.perf_counter()):.0f} ms")
        burst = funder.payments(coins[3_000:])
        assert hearth.process is not None
        # The indexer's CPU rate with nothing but the stall probe's pings, to tell the
        # burst's own cost from theirs.
        cpu = cpu_s(hearth.process.pid)
        t = time.perf_counter()
        time.sleep(5.0)
        ping_rate = (cpu_s(hearth.process.pid) - cpu) / (time.perf_counter() - t)
        cpu = cpu_s(hearth.process.pid)
        t = time.perf_counter()
        # From other processes: sender threads in this one would hold up the stall
        # probe's thread (the GIL) and time the bench, not the server.
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(4) as pool:
            pool.starmap(_send_all, [(_node_args(node), [r.hex() for r in burst[i::4]])
                                     for i in range(4)])
        send_s = time.perf_counter() - t
        time.sleep(2.0)
        row(f"longest stall, 5,000 mempool transactions (sent in {send_s:.1f} s)",
            f"{probe.longest(t, time.perf_counter()):.0f} ms")
        # Includes answering the stall probe's pings (100 a second) meanwhile; net: less
        # the rate measured with the pings alone just before.
        burst_cpu = cpu_s(hearth.process.pid) - cpu
        net = burst_cpu - ping_rate * (time.perf_counter() - t)
        row("Hearth CPU per mempool transaction (none touch a wallet)",
            f"{burst_cpu / len(burst) * 1000:.2f} ms with the pings, "
            f"{net / len(burst) * 1000:.2f} ms net of them")

        # The curve: fresh wallets (no history) with 1,000 .. 10,000 receive scripts.
        if not args.skip_curve:
            removals: list[float] = []
            for n, gap in enumerate((1_000, 2_500, 5_000, 10_000)):
                seed = hashlib.sha512(f"curve {n}".encode()).digest()
                xpub = sidechain.tpub(seed[:32], seed[32:])
                desc = node.getdescriptorinfo(f"wpkh({xpub}/0/*)")["descriptor"]
                t = time.perf_counter()
                out = hearth.cli("wallet", "add", desc, "--birthday", "0", "--gap",
                                 str(gap)).stdout
                wait_live(hearth, node.getblockcount())
                took = time.perf_counter() - t
                stall = probe.longest(t, time.perf_counter())
                row(f"add-wallet curve: {gap + 20:>6} scripts (incl. 20 change)",
                    f"{took:.1f} s, longest stall {stall:.0f} ms")
                t = time.perf_counter()
                hearth.cli("wallet", "remove", out.split()[1])
                removals.append(probe.longest(t, time.perf_counter()))
            row("longest stall while each curve wallet was removed",
                " / ".join(f"{ms:.0f}" for ms in removals) + " ms")

        probe.stop = True
        assert hearth.process is not None and ex.process is not None
        row("RSS Hearth / ElectrumX",
            f"{rss_mib(hearth.process.pid):.0f} MiB / {rss_mib(ex.process.pid):.0f} MiB")
        row("disk Hearth index / ElectrumX db",
            f"{du_mib(hearth.base / 'data'):.1f} MiB / {du_mib(ex.db):.1f} MiB")
        probe = StallProbe(hearth.client())
        probe.start()
        t = time.perf_counter()
        hearth.cli("wallet", "remove", bench_wallet)
        row("removing the 5,000-transaction wallet: took / longest stall",
            f"{time.perf_counter() - t:.1f} s / {probe.longest(t, time.perf_counter()):.0f} ms")
        probe.stop = True
    finally:
        hearth.stop()
        ex.stop()
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


def _node_args(node: TestNode) -> tuple[Any, ...]:
    return (node.index, node.datadir, node.bindir, node.extra_args, node.prune,
            node.rpc_port, node.p2p_port, node.zmq)


def _send_all(args: tuple[Any, ...], raws: list[str]) -> None:
    # A connection of its own (in a process of its own) per sender.
    index, datadir, bindir_, extra, prune, rpc_port, p2p_port, zmq = args
    own = TestNode(index, datadir, bindir_, extra, prune, rpc_port=rpc_port,
                   p2p_port=p2p_port, zmq=zmq)
    for raw in raws:
        own.sendrawtransaction(raw)


if __name__ == "__main__":
    main()
