"""Benchmark: a USB backup end to end, and what scrypt costs.

Run (root: it mounts images): .venv/bin/python firmware-tests/bench/usb_backup.py [--runs 3]
     [--export-mib 0]

Figures: scrypt-bound age encryption and decryption of the payload (rage calibrates the
work factor to this machine at encryption time; the log2(N) is printed, with the memory
it needs: 128 * r * N bytes, r = 8), and the whole agent run (probe, encrypt, mount, write,
fsync, rename, read back, decrypt-verify, prune, unmount) on an ext4 loop device and on a
vfat image (through fusefat when the kernel has no vfat, as on CI; a Pi's kernel mounts
vfat itself, which is faster). rage calibrates scrypt to ~1 s on the machine that
encrypts, so on a Pi the work factor drops instead of the time growing; the Pi line
estimates that N with the speed ratio ``--pi-ratio`` (default 5: a Cortex-A72 at 1.5 GHz
against a current x86-64 core on memory-hard hashing). Measure on a Pi to replace it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # standalone: find `appliance`

from appliance.config import load_config  # noqa: E402
from appliance.identity import load_or_create_hsm_secret, recovery_phrase  # noqa: E402
from appliance.usb.agent import UsbAgent  # noqa: E402
from appliance.usb.archive import decrypt_backup, encrypt_backup, scrypt_work_factor  # noqa: E402

__all__ = ["main"]


def _image(path: Path, fs: str, mib: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(mib * 2**20)
    args = ["mkfs.vfat", str(path)] if fs == "vfat" else ["mkfs.ext4", "-q", "-F", str(path)]
    subprocess.run(args, check=True, capture_output=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--export-mib", type=int, default=0, help="size of a backup-agent export to include")
    ap.add_argument("--pi-ratio", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (mount)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    try:
        cfg = load_config(None, overrides={
            "hearth": {"data_dir": str(base / "data"), "run_dir": str(base / "r")},
            "usb": {"mount_dir": str(base / "mnt"), "export_timeout_s": 1.0, "keep": 2}})
        if args.export_mib:
            export = cfg.backup_export_file
            export.parent.mkdir(parents=True)
            export.write_bytes(os.urandom(args.export_mib * 2**20))
        secret = load_or_create_hsm_secret(cfg.hsm_secret_file)
        phrase = " ".join(recovery_phrase(secret))
        agent = UsbAgent(cfg)
        contents = agent.contents(secret)
        enc, dec = [], []
        data = b""
        for _ in range(args.runs):
            t = time.perf_counter()
            data = encrypt_backup(contents, phrase)
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            decrypt_backup(data, phrase)
            dec.append(time.perf_counter() - t)
        log_n = scrypt_work_factor(data) or 0
        print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}")
        print(f"payload {len(data)} bytes; scrypt log2(N)={log_n} -> {128 * 8 * 2**log_n / 2**20:.0f} MiB")
        print(f"encrypt median {statistics.median(enc):.2f} s, decrypt median {statistics.median(dec):.2f} s")
        est = statistics.median(enc) + statistics.median(dec)
        # rage times scrypt at encryption and picks the log2(N) that takes ~1 s here, so
        # on a Pi it picks a smaller N, not a longer time: N shrinks by the speed ratio.
        pi_log_n = max(10, log_n - round(math.log2(args.pi_ratio)))
        print(f"Pi 4 estimate (x{args.pi_ratio:g} slower): rage picks log2(N)~{pi_log_n} "
              f"({128 * 8 * 2**pi_log_n / 2**20:.0f} MiB), ~{est:.1f} s scrypt per backup "
              f"(encrypt + verify); that file decrypts on this machine in "
              f"~{statistics.median(dec) / 2**(log_n - pi_log_n):.2f} s")
        for fs, mib in (("ext4", 32), ("vfat", 32)):
            img = _image(base / f"{fs}.img", fs, mib)
            dev = img
            loopdev = ""
            if fs == "ext4":
                loopdev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                                         capture_output=True, text=True).stdout.strip()
                dev = Path(loopdev)
            try:
                times = []
                for _ in range(args.runs):
                    outcome = agent.handle(dev)
                    if not outcome.ok:
                        print(f"{fs}: FAILED {outcome.message}")
                        break
                    times.append(outcome.seconds)
                if times:
                    via = "loop device" if loopdev else "image file"
                    print(f"{fs} ({via}): backup median {statistics.median(times):.2f} s, "
                          f"min {min(times):.2f} s; scrypt share "
                          f"{100 * est / statistics.median(times):.0f}%")
            finally:
                if loopdev:
                    subprocess.run(["losetup", "-d", loopdev], capture_output=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
