"""The watchtower's costs: storing appointments, checking blocks, answering a breach.

    .venv/bin/python firmware-tests/bench/tower.py [--appointments 1000000] [--store-n 2000]

* appointments stored per second through the TEOS API (signature recovery, slot
  accounting, a synced LevelDB write each: what a client waits for);
* the cost of checking a block against a store of N appointments: real 4,000-tx
  regtest blocks (firmware-tests/bench/blockgen.py), every txid one lookup;
* time from a breach's ``rawtx`` arriving on a ZMQ socket to the tower calling
  ``sendrawtransaction`` for its penalty (p50/p99), with the same big store;
* disk bytes per appointment after compaction.

The broadcast is stamped instead of sent (bitcoind's own acceptance time is not the
tower's); tests/functional/test_tower.py covers the real path. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import zmq
import zmq.asyncio
from coincurve import PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from blockgen import big_blocks  # noqa: E402

from appliance.chain import parse_block, parse_tx  # noqa: E402
from appliance.chain.tx import TxIn, TxOut, serialize_tx  # noqa: E402
from appliance.tower.api import TowerAPI, TowerLimits  # noqa: E402
from appliance.tower.crypto import appointment_message, encrypt_blob, locator_of, sign_message  # noqa: E402
from appliance.tower.store import Appointment, TowerStore, User  # noqa: E402
from appliance.tower.watcher import BroadcastResult, Watcher  # noqa: E402


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fake_tx(spend: bytes) -> bytes:
    return serialize_tx(2, [TxIn(spend, 0, b"", 0xFFFFFFFD, [os.urandom(72), os.urandom(33)])],
                        [TxOut(50_000, b"\x00\x14" + os.urandom(20))], 0)


def bench_api(tmp: Path, n: int) -> None:
    store = TowerStore(tmp / "api")
    api = TowerAPI(store, PrivateKey(), lambda: 800_000, TowerLimits(slots=n + 10))
    user = PrivateKey()
    api.register(json.dumps({"user_id": user.public_key.format().hex()}).encode())
    bodies = []
    penalty = fake_tx(os.urandom(32))
    for _ in range(n):
        txid = os.urandom(32)
        loc, blob = locator_of(txid), encrypt_blob(penalty, txid)
        sig = sign_message(appointment_message(loc, blob, 144), user)
        bodies.append(json.dumps({"appointment": {"locator": loc.hex(), "encrypted_blob": blob.hex(),
                                                  "to_self_delay": 144}, "signature": sig}).encode())
    started = time.perf_counter()
    for body in bodies:
        api.add_appointment(body)
    took = time.perf_counter() - started
    print(f"add_appointment (API, synced write each): {n / took:,.0f}/s "
          f"({took / n * 1e3:.2f} ms each, {len(penalty)}-byte penalty)")
    store.close()


def fill(store: TowerStore, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` appointments of ~260-byte blobs; returns 200 (txid, penalty) kept for breaches."""
    user = b"\x02" + os.urandom(32)
    kept: list[tuple[bytes, bytes]] = []
    penalty_template = fake_tx(os.urandom(32))

    def items():  # type: ignore[no-untyped-def]
        for i in range(n):
            txid = os.urandom(32)
            if i % (n // 200 or 1) == 0 and len(kept) < 200:
                penalty = fake_tx(txid)
                kept.append((txid, penalty))
                blob = encrypt_blob(penalty, txid)
            else:
                blob = os.urandom(len(penalty_template) + 16)  # same size, no need to encrypt
            yield Appointment(txid[:16], user, 144, 800_000, blob)

    started = time.perf_counter()
    store.import_appointments(items(), User(user, 10 ** 7, 800_000, 900_000))
    print(f"bulk import of {n:,} appointments: {time.perf_counter() - started:.1f} s")
    return kept


def bench_blocks(store: TowerStore, n: int) -> None:
    blocks = [parse_block(raw) for raw in big_blocks(1, 4000)]  # ~3,500 txs: the weight limit
    sent: list[bytes] = []

    async def broadcast(raw: bytes) -> BroadcastResult:
        sent.append(raw)
        return BroadcastResult(True)

    watcher = Watcher(store, broadcast, lambda k, d: None)
    times = []
    for rep in range(8):
        for i, block in enumerate(blocks):
            started = time.perf_counter()
            asyncio.run(watcher.on_block(block, 800_001 + rep * 2 + i))
            times.append(time.perf_counter() - started)
    ntx = len(blocks[0].txs)
    ninputs = sum(len(t.inputs) for t in blocks[0].txs)
    best = min(times)
    print(f"check a {ntx}-tx block ({ninputs} inputs) against {n:,} appointments: "
          f"best {best * 1e3:.1f} ms, median {statistics.median(times) * 1e3:.1f} ms "
          f"({best / ntx * 1e6:.1f} us per tx, parse excluded)")


def bench_breach(store: TowerStore, kept: list[tuple[bytes, bytes]]) -> None:
    """ZMQ rawtx in -> sendrawtransaction called, through the service's subscriber."""
    from appliance.node.zmq_sub import ZMQSubscriber

    endpoint = f"ipc://{tempfile.mkdtemp()}/rawtx"
    stamps: dict[bytes, float] = {}

    async def broadcast(raw: bytes) -> BroadcastResult:
        stamps[parse_tx(raw).inputs[0].prev_hash] = time.perf_counter()
        return BroadcastResult(True)

    watcher = Watcher(store, broadcast, lambda k, d: None)

    async def run() -> list[float]:
        ctx = zmq.asyncio.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind(endpoint)
        sub = ZMQSubscriber({"rawtx": endpoint})
        await asyncio.sleep(0.3)
        sent_at: dict[bytes, float] = {}

        async def consume() -> None:
            async for note in sub:
                if note.body:
                    await watcher.on_transaction(parse_tx(note.body))
                if len(stamps) == len(kept):
                    return

        task = asyncio.create_task(consume())
        for seq, (txid, _penalty) in enumerate(kept):
            # A "breach" with this exact txid cannot be forged; instead the watcher is
            # given a transaction whose txid is the kept one by construction below.
            breach = breaches[txid]
            sent_at[txid] = time.perf_counter()
            await pub.send_multipart([b"rawtx", breach, struct.pack("<I", seq)])
            await asyncio.sleep(0.01)
        await asyncio.wait_for(task, 30)
        sub.close()
        pub.close(0)
        ctx.term()
        return [stamps[t] - sent_at[t] for t in sent_at]

    # The kept appointments were made for random txids; re-key them to real transactions.
    breaches: dict[bytes, bytes] = {}
    rekeyed: list[tuple[bytes, bytes]] = []
    user = b"\x03" + os.urandom(32)
    for _ in kept:
        breach = fake_tx(os.urandom(32))
        txid = parse_tx(breach).txid
        penalty = fake_tx(txid)
        store.put_appointment(Appointment(locator_of(txid), user, 144, 800_000,
                                          encrypt_blob(penalty, txid)), User(user, 10 ** 6, 0, 10 ** 7))
        breaches[txid] = breach
        rekeyed.append((txid, penalty))
    kept[:] = rekeyed
    lat = sorted(asyncio.run(run()))
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"breach rawtx on ZMQ -> sendrawtransaction called ({len(lat)} breaches): "
          f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms")


def main() -> None:
    import logging

    logging.getLogger("tower").setLevel(logging.ERROR)  # one line per fake breach otherwise
    ap = argparse.ArgumentParser()
    ap.add_argument("--appointments", type=int, default=1_000_000)
    ap.add_argument("--store-n", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        bench_api(tmp, args.store_n)
        store = TowerStore(tmp / "big")
        kept = fill(store, args.appointments)
        store.db.compact_range()
        size = du(tmp / "big")
        print(f"disk: {size / 1e6:.1f} MB for {args.appointments:,} appointments = "
              f"{size / args.appointments:.0f} bytes each (blob ~{len(fake_tx(bytes(32))) + 16} bytes)")
        bench_blocks(store, args.appointments)
        bench_breach(store, kept)
        store.close()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
