"""The indexer's CPU per mempool transaction that touches no wallet, vs one parse of it.

    .venv/bin/python firmware-tests/bench/mempool_intake.py [-n 5000] [--idle 5]

A small regtest chain (mined here to a funder key), the indexer with one live wallet
(one payment confirmed), then ``n`` pre-signed transactions paying scripts of no wallet,
sent with ``sendrawtransaction`` from 4 processes (as vs_electrumx.py's burst). Printed:
the indexer's CPU per transaction (utime+stime from /proc, less the rate of an idle
spell of ``--idle`` seconds just before), per thread (/proc/<pid>/task/*/stat; the main
thread runs the event loop, libzmq's threads are named ZMQbg/*), bitcoind's CPU per
transaction for context, and one ``parse_tx`` of the same transactions in this Python
(the ratio the issue asks for). Asserts nothing: it measures.

``--bare RATE``: no bitcoind, no indexer: a publisher process sends ``n`` such
transactions as ``rawtx`` + ``sequence`` "A" at RATE a second on two sockets (as
bitcoind does), read by the indexer's LoopSubscriber and dispatched by ChainFollower to
a listener that does nothing; prints the loop thread's CPU per transaction (what the
reading and dispatch cost, wake-ups included); ``--linger S`` fixes the burst's wait
at S seconds (else it grows from 20 to 100 ms as in the service).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import sidechain  # noqa: E402
from blockgen import bindir  # noqa: E402
from functional.framework.appliance import IndexerProcess  # noqa: E402
from functional.framework.node import TestNode  # noqa: E402
from functional.framework.util import free_port  # noqa: E402
from vs_electrumx import Funder, _node_args, _send_all, cpu_s  # noqa: E402

import appliance.indexer.zmq_reader as zmq_reader  # noqa: E402
from appliance.chain import Tx, address_to_script, parse_tx, script_to_address  # noqa: E402
from appliance.node.follower import ChainFollower  # noqa: E402


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (name, user + system CPU seconds) of every thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12]))
                               / os.sysconf("SC_CLK_TCK"))
    return out


def parse_cost(raws: list[bytes], rounds: int = 5) -> float:
    """CPU seconds of one ``parse_tx`` of each of ``raws`` (best of ``rounds``)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for raw in raws:
            parse_tx(raw)
        best = min(best, time.process_time() - t)
    return best


_PUBLISHER = """
import sys, time, zmq
rate, raw_hex = float(sys.argv[1]), sys.stdin.read().split()
ctx = zmq.Context()
raw, seq = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
raw.bind(sys.argv[2])
seq.bind(sys.argv[3])
time.sleep(1.5)  # subscribers connect
start = time.monotonic()
for i in range(0, len(raw_hex), 2):
    n = i // 2
    raw.send_multipart([b"rawtx", bytes.fromhex(raw_hex[i]), n.to_bytes(4, "little")])
    seq.send_multipart([b"sequence", bytes.fromhex(raw_hex[i + 1]) + b"A"
                        + n.to_bytes(8, "little"), n.to_bytes(4, "little")])
    time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
time.sleep(1.0)
"""


class _Counter:
    """A listener that only counts what the follower hands it."""

    def __init__(self) -> None:
        self.added = 0

    async def tx_added(self, tx: Tx) -> None:
        self.added += 1


def bare(burst: list[bytes], rate: float) -> None:
    """The subscriber and the follower's dispatch alone (see the module doc)."""
    ends = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    pairs = "\n".join(f"{r.hex()} {parse_tx(r).txid[::-1].hex()}" for r in burst)

    async def run() -> float:
        sub = zmq_reader.LoopSubscriber({"rawtx": ends[0], "sequence": ends[1]})
        listener = _Counter()
        follower = ChainFollower(None, sub, listener)  # type: ignore[arg-type]
        pub = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(rate), *ends],
                               stdin=subprocess.PIPE, text=True)
        assert pub.stdin is not None
        pub.stdin.write(pairs)
        pub.stdin.close()
        used = time.thread_time()
        try:
            while listener.added < len(burst):
                note = await sub.next(30)
                if note is None:
                    raise RuntimeError(f"{listener.added} of {len(burst)} arrived")
                await follower._handle(note)
            return time.thread_time() - used
        finally:
            pub.wait(60)
            sub.close()

    used = asyncio.run(run())
    print(f"bare: {len(burst)} transactions at {rate:.0f}/s, burst wait "
          f"{zmq_reader._LINGER_S * 1000:.0f}-{zmq_reader._LINGER_MAX_S * 1000:.0f} ms: "
          "loop thread "
          f"{used / len(burst) * 1e6:.1f} us CPU per transaction")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=5_000, help="transactions in the burst")
    p.add_argument("--idle", type=float, default=5.0, help="idle baseline, seconds")
    p.add_argument("--py-spy", metavar="PY_SPY", help="also sample the indexer with this "
                   "py-spy binary during the burst (collapsed stacks, path printed)")
    p.add_argument("--perf", action="store_true", help="also record the indexer with "
                   "perf during the burst and print its CPU by thread and library")
    p.add_argument("--bare", type=float, metavar="RATE",
                   help="only the subscriber and follower dispatch, RATE tx/s")
    p.add_argument("--linger", type=float, help="with --bare: a fixed burst wait (s)")
    args = p.parse_args()
    if args.bare:
        if args.linger:
            zmq_reader._LINGER_S = zmq_reader._LINGER_MAX_S = args.linger
        key = sidechain.Key.of(hashlib.sha256(b"bare").digest())
        bare([sidechain.sign_tx(
            [sidechain.Coin(hashlib.sha256(i.to_bytes(4, "big")).digest(), 0, 100_000, key)],
            [(b"\x00\x14" + hashlib.sha256(b"out %d" % i).digest()[:20], 99_500)])[0]
            for i in range(args.n)], args.bare)
        return
    work = Path(tempfile.mkdtemp(prefix="hearth-mempool-"))
    node = TestNode(0, work / "node", bindir(), sidechain.NODE_ARGS, prune=False)
    hearth = IndexerProcess(work / "appliance", node)
    hearth.config.write_text(hearth.config.read_text()
                             .replace('level = "debug"', 'level = "info"'))
    try:
        node.start()
        funder = Funder(node)
        # Coinbases from height 100 pay the funder (Funder.coins splits them); mature.
        addr = str(script_to_address(funder.key.script, "regtest"))
        node.rpc("generatetoaddress", 99, funder.sink)
        node.rpc("generatetoaddress", 10 + args.n // 2_500, addr)
        node.rpc("generatetoaddress", 101, funder.sink)
        coins = funder.coins(args.n + 1)
        hearth.start()
        seed = hashlib.sha512(b"mempool intake bench").digest()
        desc = node.getdescriptorinfo(
            f"wpkh({sidechain.tpub(seed[:32], seed[32:])}/0/*)")["descriptor"]
        ours = node.rpc("deriveaddresses", desc, [0, 0])[0]
        hearth.wallet_add(desc, birthday=node.getblockcount())
        pay = funder.payments(coins[:1], to=address_to_script(ours, "regtest"))
        node.rpc("generateblock", funder.sink, [r.hex() for r in pay])
        hearth.wait_synced(timeout=300)
        burst = funder.payments(coins[1:])
        assert hearth.process is not None and node.process is not None
        pid, npid = hearth.process.pid, node.process.pid
        print(f"chain: {node.getblockcount()} blocks; one live wallet; burst of "
              f"{len(burst)} transactions paying no wallet "
              f"({sum(map(len, burst)) / len(burst):.0f} bytes each)", flush=True)
        print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)

        time.sleep(1.0)
        idle0, t = cpu_s(pid), time.perf_counter()
        time.sleep(args.idle)
        idle_rate = (cpu_s(pid) - idle0) / (time.perf_counter() - t)

        spy = None
        if args.py_spy:  # --nonblocking: the samples do not stop the indexer
            stacks = Path(tempfile.gettempdir()) / f"mempool-intake-{pid}.txt"
            spy = subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "--rate",
                                    "250", "--nonblocking", "--gil", "--threads", "--format", "raw",
                                    "-o", str(stacks)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        perf = None
        if args.perf:
            perf_data = Path(tempfile.gettempdir()) / f"mempool-intake-{pid}.perf"
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(pid),
                                     "-o", str(perf_data)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        before, node_before = thread_cpu(pid), cpu_s(npid)
        cpu0, t = cpu_s(pid), time.perf_counter()
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(4) as pool:
            pool.starmap(_send_all, [(_node_args(node), [r.hex() for r in burst[i::4]])
                                     for i in range(4)])
        send_s = time.perf_counter() - t
        time.sleep(2.0)  # the last hand-offs and whatever the indexer does after
        took = time.perf_counter() - t
        cpu = cpu_s(pid) - cpu0 - idle_rate * took
        after, node_cpu = thread_cpu(pid), cpu_s(npid) - node_before
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
            report = subprocess.run(["perf", "report", "-i", str(perf_data), "--stdio",
                                     "--sort", "comm,dso", "--percent-limit", "1"],
                                    capture_output=True, text=True).stdout
            print("perf: share of the indexer's samples by thread and library")
            print("\n".join("    " + line for line in report.splitlines()
                            if line.strip() and not line.startswith("#")))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            print(f"py-spy stacks: {stacks}")
        assert node.rpc("getmempoolinfo")["size"] >= len(burst)

        n = len(burst)
        one_parse = parse_cost(burst) / n
        print(f"sent in {send_s:.1f} s ({n / send_s:.0f} tx/s); idle indexer "
              f"{idle_rate * 1000:.2f} ms CPU/s", flush=True)
        print(f"  indexer CPU per transaction (net of idle)   {cpu / n * 1e3:.3f} ms")
        print(f"  one parse_tx per transaction (this Python)  {one_parse * 1e3:.3f} ms")
        print(f"  ratio intake / one parse                    {cpu / n / one_parse:.2f}")
        print(f"  bitcoind CPU per transaction                {node_cpu / n * 1e3:.3f} ms")
        print("  per thread (ms CPU per transaction, not net of idle):")
        for tid, (name, used) in sorted(after.items()):
            spent = used - before.get(tid, (name, 0.0))[1]
            if spent > 0:
                label = "event loop (main)" if tid == pid else name
                print(f"    {label:<24} {spent / n * 1e3:.3f} ms")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        hearth.stop()
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
