"""Benchmark: decrypting a USB backup with Hearth's age decryptor against pyrage (rage).

Run: .venv/bin/python firmware-tests/bench/age_decrypt.py [--runs 5] [--export-kib 256]
     [--large-mib 16]

Each file is made once by pyrage (rage calibrates its scrypt work factor to ~1 s on this
machine; the log2 N is printed) and then decrypted ``--runs`` times by each side,
alternating, so both see the same load. Figures: a typical backup (hsm_secret,
metadata, a backup-agent export of ``--export-kib``, paired clients; scrypt dominates),
a large one (``--large-mib`` of export: the STREAM payload shows), and the payload alone
(MAC + STREAM with the file key, no scrypt) in MB/s. Medians; ratio = ours / pyrage
(below 1: ours is faster). pyrage may refuse a file here when the machine is busy (its
decrypt-time speed estimate: the reason agefile exists); such runs are counted, not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pyrage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # standalone: find `appliance`

from appliance.usb import agefile  # noqa: E402
from appliance.usb.archive import BackupContents, build_payload, metadata  # noqa: E402

__all__ = ["main"]

PHRASE = "abandon ability able about above absent absorb abstract absurd abuse access accident"


def _backup(export_bytes: int) -> bytes:
    secret = os.urandom(32)
    meta = metadata(secret, created="2026-12-04T00:00:00Z", version="bench", network="regtest",
                    agent_source="live")
    return build_payload(BackupContents(secret, meta, os.urandom(export_bytes), b'{"clients": {}}'))


def _compare(label: str, plain: bytes, runs: int) -> None:
    data = bytes(pyrage.passphrase.encrypt(plain, PHRASE))
    ours: list[float] = []
    theirs: list[float] = []
    refused = 0
    for _ in range(runs):
        start = time.perf_counter()
        assert agefile.decrypt(data, PHRASE) == plain
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        try:
            assert bytes(pyrage.passphrase.decrypt(data, PHRASE)) == plain
            theirs.append(time.perf_counter() - start)
        except pyrage.DecryptError:
            refused += 1
    mine = statistics.median(ours)
    line = (f"{label}: {len(data) / 2**20:.2f} MiB file, scrypt log2 N = "
            f"{agefile.work_factor(data)}: agefile median {mine:.3f} s")
    if theirs:
        other = statistics.median(theirs)
        line += f", pyrage median {other:.3f} s, ratio {mine / other:.2f}"
    print(line + (f"; pyrage refused {refused}/{runs} runs" if refused else ""))
    header = agefile.parse_header(data)
    key = agefile.unwrap_file_key(header, PHRASE)
    stream: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        agefile.open_payload(data, header, key)
        stream.append(time.perf_counter() - start)
    print(f"  payload alone (MAC + STREAM, no scrypt): {statistics.median(stream) * 1000:.1f} ms, "
          f"{len(plain) / statistics.median(stream) / 1e6:.0f} MB/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--export-kib", type=int, default=256)
    ap.add_argument("--large-mib", type=int, default=16)
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d')}")
    _compare(f"typical backup ({args.export_kib} KiB export)", _backup(args.export_kib * 1024),
             args.runs)
    _compare(f"large backup ({args.large_mib} MiB export)", _backup(args.large_mib * 2**20),
             args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
