"""`./build.sh sim`: the real supervisord runs bitcoind and the services; connect.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from functional.framework.util import wait_until

pytestmark = [pytest.mark.node, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SIM = [sys.executable, str(REPO / "scripts" / "sim.py")]


def test_sim_up_status_down(tmp_path: Path, bitcoind_bindir: Path) -> None:
    d = tmp_path / "sim"
    try:
        up = subprocess.run([*SIM, "up", "--dir", str(d)], capture_output=True, text=True,
                            timeout=180)
        assert up.returncode == 0, up.stderr
        connect = json.loads((d / "connect.json").read_text())
        assert connect == json.loads(up.stdout)
        assert connect["network"] == "regtest" and connect["bitcoind"]["height"] >= 101
        assert (d / "hearth.toml").stat().st_mode & 0o077 == 0
        # Issue 12: it was 0644 while holding the tower password and the pairing code.
        assert (d / "connect.json").stat().st_mode & 0o077 == 0
        # The watchtower runs too and says how Electrum reaches it.
        tower = connect["tower"]
        assert tower["watchtower_url"].startswith("http://hearth:") and tower["ports"]["noise"]
        assert "hearth-tower" in (d / "supervisord.conf").read_text()
        cli = [str(bitcoind_bindir / "bitcoin-cli"), f"-datadir={d / 'bitcoin'}", "-regtest",
               f"-rpcport={connect['bitcoind']['rpc_url'].rsplit(':', 1)[1]}"]
        addr = subprocess.run([*cli, "-rpcwallet=sim", "getnewaddress"], check=True,
                              capture_output=True, text=True).stdout.strip()
        subprocess.run([*cli, "generatetoaddress", "1", addr], check=True, capture_output=True)
        log = d / "log" / "hearth-node.log"
        wait_until(lambda: log.exists() and "new tip 102" in log.read_text(), timeout=30)
        status = subprocess.run([*SIM, "status", "--dir", str(d)], capture_output=True,
                                text=True)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "bitcoind" in status.stdout and "RUNNING" in status.stdout
        assert "blocks 102" in status.stdout
        assert "supervisor" in status.stdout and "hearth-supervision" in status.stdout
        again = subprocess.run([*SIM, "up", "--dir", str(d)], capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0 and json.loads(again.stdout)["bitcoind"]["height"] == 102
    finally:
        down = subprocess.run([*SIM, "down", "--dir", str(d)], capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
