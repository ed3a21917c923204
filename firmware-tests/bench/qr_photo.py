"""What reading a wallet QR from a phone photo costs the setup page (time, memory).

    .venv/bin/python firmware-tests/bench/qr_photo.py [--runs N]

12 MP JPEG photos (4000x3000, as a phone sends them) made by the tests' photo maker:
a code filling 35% of the height (read at the first, 1280 px size) and one at 10% (read
at the second, 2560 px try). The peer is the naive way: decode the whole photo to gray at
full size and give it to zbar. Each case runs in a fresh process so its peak RSS (above
the imports) is its own. "Isolated" is what the page does: the same decode in a fresh,
limited child (``read_qr_codes_isolated``), so it adds that process's start. Prints
medians and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from functional.framework.qrphoto import qr_photo  # noqa: E402

from appliance.setup.scan import read_qr_codes_isolated  # noqa: E402

VPUB = ("vpub5Xzfrm6ouSBPEvS1a3ZWBePKFrvz2XEJC82RaNGNvCrcm4t7xL3Tfad4aDNuzs1wPnuSJm7n973r5"
        "xyXXpyVdowWfyor2od9C5kMDfifEZH")

CHILD = r"""
import io, json, sys, time
from PIL import Image
from pyzbar import pyzbar
from appliance.setup.scan import read_qr_codes
path, how, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
def hwm():  # this process's peak RSS in KiB (ru_maxrss would carry the parent's over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1])
base = hwm()
def naive():
    gray = Image.open(io.BytesIO(data)).convert("L")
    return [s.data.decode() for s in pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE])]
times, found = [], None
for _ in range(runs):
    t = time.perf_counter()
    found = read_qr_codes(data) if how == "box" else naive()
    times.append(time.perf_counter() - t)
peak = hwm()
print(json.dumps({"times": times, "found": found, "rss_kb": peak - base, "base_kb": base}))
"""


def run(path: Path, how: str, runs: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), how, str(runs)],
                         capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, fraction in (("code 35% of height", 0.35), ("code 10% of height", 0.10)):
            path = Path(tmp) / "photo.jpg"
            path.write_bytes(qr_photo(VPUB, size=(4000, 3000), fraction=fraction, angle=6))
            print(f"(imports: {int(run(path, 'box', 0)['base_kb']) // 1024} MiB peak RSS)")  # type: ignore[call-overload]
            box, naive = run(path, "box", args.runs), run(path, "naive", args.runs)
            isolated = []
            for _ in range(args.runs):
                t = time.perf_counter()
                assert asyncio.run(read_qr_codes_isolated(path.read_bytes())) == [VPUB]
                isolated.append(time.perf_counter() - t)
            ti = statistics.median(isolated)
            tb = statistics.median(box["times"])  # type: ignore[arg-type]
            tn = statistics.median(naive["times"])  # type: ignore[arg-type]
            print(f"12 MP JPEG ({path.stat().st_size // 1024} KiB), {name}: "
                  f"box {tb * 1000:.0f} ms, +{int(box['rss_kb']) // 1024} MiB "  # type: ignore[call-overload]
                  f"(read: {box['found'] == [VPUB]}); naive full-size {tn * 1000:.0f} ms, "
                  f"+{int(naive['rss_kb']) // 1024} MiB (read: {naive['found'] == [VPUB]}); "  # type: ignore[call-overload]
                  f"naive/box time {tn / tb:.1f}x; isolated (child process) {ti * 1000:.0f} ms")


if __name__ == "__main__":
    main()
