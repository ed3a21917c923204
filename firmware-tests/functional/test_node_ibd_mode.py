"""After the initial sync the node service gives bitcoind its steady dbcache: a real
supervisord runs a real bitcoind (with a bitcoin.conf written for the initial sync) and
``appliance run node``; the node service rewrites the file and has supervisord restart
bitcoind, whose own log shows the smaller cache."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from appliance.node.bitcoin_conf import IBD_MARKER
from functional.framework.node import NodeFactory
from functional.framework.supervisord import supervisord
from functional.framework.util import hearth_section, wait_until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.node]

VENV_BIN = Path(sys.executable).parent
_UTXO_CACHE = re.compile(r"Using ([\d.]+) MiB for in-memory UTXO set")


def test_dbcache_lowered_and_bitcoind_restarted_after_sync(node_factory: NodeFactory,
                                                           timeout_factor: float) -> None:
    node = node_factory.create()
    node.stop()  # from here on supervisord runs it
    d = Path(tempfile.mkdtemp(prefix="hibd-", dir="/tmp"))  # ipc paths must stay short
    try:
        conf = d / "bitcoin.conf"
        conf.write_text(f"{IBD_MARKER}40  (test)\ndbcache=200\n")
        conf.chmod(0o640)  # as first boot writes it on the image (hearth:bitcoin)
        args = [a for a in node.args() if a != "-printtoconsole=0"]
        toml = d / "hearth.toml"
        write_config(toml, {"hearth": hearth_section(d),
                            "node": {**node.hearth_node(("hashblock",)), "conf_file": conf}})
        programs = f"""
[program:bitcoind]
command={' '.join(args)} -conf={conf} -printtoconsole=1
priority=10
startsecs=3
stopwaitsecs=60
redirect_stderr=true
stdout_logfile={d}/bitcoind.log
[program:hearth-node]
command={VENV_BIN / 'appliance'} run node --config {toml}
priority=20
startsecs=2
redirect_stderr=true
stdout_logfile={d}/node.log
"""
        with supervisord(d, programs):
            def cache_sizes() -> list[float]:
                log = d / "bitcoind.log"
                return [float(m) for m in _UTXO_CACHE.findall(log.read_text())] if log.exists() else []
            wait_until(lambda: len(cache_sizes()) >= 2, timeout=90, factor=timeout_factor)
            first, second = cache_sizes()[:2]
            assert second < first / 2, (first, second)
            text = conf.read_text()
            assert "dbcache=40" in text and IBD_MARKER not in text
            # Mode and group kept: on the image bitcoind reads it through its group.
            assert conf.stat().st_mode & 0o7777 == 0o640
            assert "initial sync over: dbcache=40, restarting bitcoind" in (d / "node.log").read_text()
    finally:
        shutil.rmtree(d, ignore_errors=True)
