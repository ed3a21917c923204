"""firmware-tests/tools/get-bitcoind: cached, concurrency-safe, amd64 and arm64, and it
leaves the system's apt sources and dpkg state alone."""

from __future__ import annotations

import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "get-bitcoind"


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()


def test_cached_and_concurrent(bitcoind_bindir: Path) -> None:
    prefix = bitcoind_bindir.parent.parent  # .../<prefix>/<arch>/bin
    runs = [[str(TOOL), "--prefix", str(prefix), "--print-bindir"]] * 4
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True,
                                                        check=True, timeout=120), runs))
    assert {o.stdout.strip() for o in outs} == {str(bitcoind_bindir)}
    version = subprocess.run([str(bitcoind_bindir / "bitcoind"), "-version"],
                             capture_output=True, text=True, check=True).stdout
    assert "Knots" in version or "Bitcoin Core" in version


@pytest.mark.slow
def test_arm64_unpacks_without_touching_the_system(tmp_path: Path) -> None:
    system = [Path("/var/lib/dpkg/status"), Path("/etc/apt")]
    before = digest(*system)
    out = subprocess.run([str(TOOL), "--arch", "arm64", "--prefix", str(tmp_path),
                          "--print-bindir"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    bindir = Path(out.stdout.strip().splitlines()[-1])
    binary = tmp_path / "arm64" / "root" / "usr" / "bin" / "bitcoind"
    elf = binary.read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # AArch64
    loader = tmp_path / "arm64" / "root" / "usr" / "lib" / "aarch64-linux-gnu"
    assert (loader / "ld-linux-aarch64.so.1").exists()
    assert "ld-linux-aarch64.so.1" in (bindir / "bitcoind").read_text()
    assert digest(*system) == before
