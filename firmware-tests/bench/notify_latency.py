"""ZMQ-to-notification latency of the running indexer, and its resident memory.

    .venv/bin/python firmware-tests/bench/notify_latency.py [--payments N] [--blocks N]

A real regtest bitcoind and ``appliance run indexer``; an Electrum client subscribed to
the wallet's addresses and to headers; a separate ZMQ subscriber stamps the moment
bitcoind published each transaction (rawtx) and block (hashblock). Latency is the time
from that stamp to the client's notification. Prints p50/p99; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from blockgen import bindir  # noqa: E402
from functional.framework.appliance import IndexerProcess, scripthash_of  # noqa: E402
from functional.framework.node import NodeFactory, build_cached_chain  # noqa: E402

from appliance.chain.encoding import double_sha256, hash_to_hex_str  # noqa: E402


class Stamper(threading.Thread):
    """Records when bitcoind published each rawtx (by txid) and hashblock."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        for topic in ("rawtx", "hashblock"):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for ep in {endpoints["rawtx"], endpoints["hashblock"]}:
            self.sock.connect(ep)
        self.seen: dict[str, float] = {}
        self.stop = False

    def run(self) -> None:

        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop:
            if not poller.poll(100):
                continue
            topic, body, _seq = self.sock.recv_multipart()
            now = time.perf_counter()
            if topic == b"rawtx":  # keyed by wtxid: the hash of the full raw bytes
                key = hash_to_hex_str(double_sha256(body))
            else:
                key = body.hex()
            self.seen.setdefault(key, now)


def percentiles(values: list[float]) -> str:
    values = sorted(v * 1000 for v in values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.1f} ms  p99 {p99:.1f} ms  max {values[-1]:.1f} ms"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--payments", type=int, default=100)
    p.add_argument("--blocks", type=int, default=30)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
    bins = bindir()
    factory = NodeFactory(tmp, bins, cache_dir=build_cached_chain(tmp / "cache", bins))
    node = factory.create()
    indexer = IndexerProcess(tmp / "appliance", node)
    stamper = Stamper(node.zmq)
    stamper.start()
    try:
        indexer.start()
        node.createwallet("w1")
        indexer.wallet_add(*node.descriptors("w1"))
        indexer.wait_synced()
        client = indexer.client()
        addresses = [node.rpc("getnewaddress", wallet="w1", ) for _ in range(args.payments)]
        for a in addresses:
            client.call("blockchain.scripthash.subscribe",
                        scripthash_of(node.validateaddress(a)["scriptPubKey"]))
        client.call("blockchain.headers.subscribe")
        tx_lat: list[float] = []
        for a in addresses:
            txid = node.send(a, "0.001")
            note = client.wait_notification("blockchain.scripthash.subscribe")
            got = time.perf_counter()
            wtxid = node.getmempoolentry(txid)["wtxid"]
            sent = stamper.seen.get(wtxid)
            if sent is not None and note:
                tx_lat.append(got - sent)
        block_lat: list[float] = []
        for _ in range(args.blocks):
            (block_hash,) = node.mine(1)
            client.wait_notification("blockchain.headers.subscribe")
            got = time.perf_counter()
            while client.notifications:  # confirmations also notify scripthashes
                client.notifications.popleft()
            if block_hash in stamper.seen:
                block_lat.append(got - stamper.seen[block_hash])
        pid = indexer.process.pid if indexer.process else None
        status = Path(f"/proc/{pid}/status").read_text() if pid else ""
        mem = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status.splitlines()
               if line.startswith(("VmRSS", "VmHWM"))}
        print(f"notify_latency: {len(tx_lat)} payments to subscribed addresses, "
              f"{len(block_lat)} blocks, one client with {args.payments} subscriptions")
        print(f"  tx (zmq rawtx -> scripthash notification):  {percentiles(tx_lat)}")
        print(f"  block (zmq hashblock -> headers notification): {percentiles(block_lat)}")
        print(f"  indexer process: VmRSS {mem.get('VmRSS')} MiB, peak VmHWM {mem.get('VmHWM')} MiB")
    finally:
        stamper.stop = True
        indexer.stop()
        factory.stop_all()


if __name__ == "__main__":
    main()
