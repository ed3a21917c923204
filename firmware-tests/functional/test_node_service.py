"""`appliance run node` and `appliance status` against a real bitcoind."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from functional.framework.node import TestNode
from functional.framework.util import APPLIANCE, hearth_section, wait_until, write_config

pytestmark = pytest.mark.node



def node_config(tmp_path: Path, node: TestNode) -> Path:
    return write_config(tmp_path / "hearth.toml", {
        "hearth": hearth_section(tmp_path), "node": node.hearth_node(("hashblock",))})


def test_status_reports_the_node(tmp_path: Path, node: TestNode) -> None:
    cfg = node_config(tmp_path, node)
    out = subprocess.run([APPLIANCE, "status", "--json", "--config", str(cfg)],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["node"]["blocks"] == node.getblockcount()
    assert report["node"]["chain"] == "regtest" and report["node"]["pruned"] is True
    text = subprocess.run([APPLIANCE, "status", "--config", str(cfg)],
                          capture_output=True, text=True, check=True).stdout
    assert f"blocks {node.getblockcount()}" in text


def test_status_when_node_is_down_is_a_clear_line(tmp_path: Path, node: TestNode) -> None:
    cfg = node_config(tmp_path, node)
    node.stop()
    out = subprocess.run([APPLIANCE, "status", "--config", str(cfg)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "node: unavailable" in out.stdout and "Traceback" not in out.stderr
    cookie_hint = node.cookie_file.read_text() if node.cookie_file.exists() else "\0"
    assert cookie_hint not in out.stdout


def test_node_service_waits_for_bitcoind_then_logs_tips(tmp_path: Path, node: TestNode) -> None:
    cfg = node_config(tmp_path, node)
    node.stop()  # the service starts first, as it may on boot
    log = tmp_path / "service.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([APPLIANCE, "run", "node", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "waiting for bitcoind" in log.read_text())
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        node.start()
        wait_until(lambda: "bitcoind ready" in log.read_text())
        node.mine(1)
        height = node.getblockcount()
        wait_until(lambda: f"new tip {height}" in log.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0, log.read_text()
    assert "stopping on signal" in log.read_text()
