"""bitcoind killed after a reorg below its last flush comes back by itself, index intact.

Bitcoin Knots 29.4 then stops at every start with "Cannot read last block filter header;
index may be corrupted" (docs/reliability.md). Here a real pruned regtest bitcoind runs
under a real supervisord with the supervision listener and the ``bitcoind-repair``
program, as on the box: the crash is reproduced (the log shows the error), the listener
recognises it, runs the repair and starts bitcoind again, with nobody typing anything.
The repaired index is then compared, block by block, with the index of a second node
that never crashed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.status import read_status_once
from functional.framework.node import NodeFactory, TestNode
from functional.framework.supervisord import ctl, supervisord
from functional.framework.util import wait_until, write_config

pytestmark = [pytest.mark.node, pytest.mark.slow]


def _programs(d: Path, node: TestNode, hearth_toml: Path) -> str:
    args = [a.replace("-printtoconsole=0", "-printtoconsole=1") for a in node.args()]
    return f"""
[eventlistener:hearth-supervision]
command={sys.executable} -m appliance.supervision.service --config {hearth_toml} --retry-base 2 --retry-max 4
events=PROCESS_STATE
buffer_size=100
autorestart=true
stdout_logfile={d}/listener.out
stderr_logfile={d}/listener.err

[program:bitcoind]
command={shlex.join(args)}
autorestart=true
startsecs=3
startretries=3
stopwaitsecs=60
redirect_stderr=true
stdout_logfile={d}/bitcoind.log

[program:bitcoind-repair]
command={sys.executable} -m appliance.node.filter_repair --datadir={node.datadir}
autostart=false
autorestart=false
startsecs=0
startretries=0
redirect_stderr=true
stdout_logfile={d}/repair.log
"""


@pytest.fixture
def supervised(node_factory: NodeFactory) -> Iterator[tuple[TestNode, Path, Path]]:
    node = node_factory.create()
    node.addresses = [node.new_address(), node.new_address("bech32m")]  # type: ignore[attr-defined]
    node.stop()  # from here on supervisord runs it
    d = Path(tempfile.mkdtemp(prefix="hfr-", dir="/tmp"))  # socket paths stay short
    run_dir = d / "run"
    run_dir.mkdir()
    hearth_toml = d / "hearth.toml"
    write_config(hearth_toml, {"hearth": {"network": "regtest", "run_dir": run_dir},
                               "node": {"bitcoin_dir": node.datadir}})
    try:
        with supervisord(d, _programs(d, node, hearth_toml)) as (conf, _):
            node.wait_for_rpc_connection()
            yield node, d, conf
    finally:
        for name in ("listener.err", "repair.log"):
            if (d / name).exists():
                sys.stderr.write((d / name).read_text()[-3000:])  # shown when a test fails
        node._close()
        shutil.rmtree(d, ignore_errors=True)


def test_bitcoind_back_by_itself_after_a_reorg_below_its_flush_and_kill_9(
        supervised: tuple[TestNode, Path, Path], node_factory: NodeFactory) -> None:
    node, d, conf = supervised
    other = node.addresses[1]  # type: ignore[attr-defined]  # no wallet under supervisord
    # The oracle: a node that never crashes follows the same chain until the reorg.
    ref = node_factory.create(prune=False)
    node.addnode(f"127.0.0.1:{ref.p2p_port}", "onetry")
    # A pruned node that really pruned (bitcoind keeps the last 288 blocks, -fastprune
    # files hold ~250): it cannot rebuild a filter index from genesis, so moving the
    # index aside would not do. (The blocks come from the unpruned oracle: a pruned node
    # serves only its last 288.)
    ref.mine(400)
    wait_until(lambda: node.getbestblockhash() == ref.getbestblockhash(), timeout=60)
    assert node.prune_to(node.getblockcount() - 288) > 0
    ref.mine(5)
    wait_until(lambda: node.getbestblockhash() == ref.getbestblockhash(), timeout=60)
    node.rpc("gettxoutsetinfo", "none")  # bitcoind flushes its chainstate (and the index)
    ref.setnetworkactive(False)
    height = node.getblockcount()
    node.invalidateblock(node.getblockhash(height - 3))
    node.rpc("generatetoaddress", 5, other)  # a reorg 4 deep, below the flushed tip
    wait_until(lambda: node.getindexinfo()["basic block filter index"]["best_block_height"]
               == node.getblockcount(), timeout=30)

    node._close()
    ctl(conf, "signal", "KILL", "bitcoind")  # a power cut; supervisord starts it again

    def back() -> bool:
        st = read_status_once(d / "run", timeout=2.0).get("supervisor")
        if st is None or st.status is None or not st.status.counters.get("repairs"):
            return False
        try:
            node.wait_for_rpc_connection()
            info = node.getindexinfo()["basic block filter index"]
        except Exception:
            node._close()
            return False
        return bool(info["synced"]) and info["best_block_height"] == node.getblockcount()

    wait_until(back, timeout=180)
    log = (d / "bitcoind.log").read_text(errors="replace")
    assert "Cannot read last block filter header" in log  # the crash was reproduced
    wait_until(lambda: re.search(r"RUNNING", ctl(conf, "status", "bitcoind")), timeout=30)
    said = (d / "repair.log").read_text()
    assert "rewound to height" in said, said
    # What `appliance status` shows afterwards (the OLED showed "repairing it" meanwhile).
    st = read_status_once(d / "run", timeout=2.0)["supervisor"].status
    assert st is not None and st.last_error is not None
    assert st.last_error.startswith("bitcoind repaired after a crash: block filter index rewound")

    # The repaired index equals the one the node that never crashed built.
    ref.setnetworkactive(True)
    node.addnode(f"127.0.0.1:{ref.p2p_port}", "onetry")
    wait_until(lambda: ref.getbestblockhash() == node.getbestblockhash(), timeout=60)
    wait_until(lambda: node.getindexinfo()["basic block filter index"]["best_block_height"]
               == ref.getindexinfo()["basic block filter index"]["best_block_height"]
               == node.getblockcount(), timeout=60)
    pruned = int(node.getblockchaininfo()["pruneheight"])
    assert pruned > 0
    for h in range(node.getblockcount() + 1):
        block = node.getblockhash(h)
        assert node.getblockfilter(block) == ref.getblockfilter(block), h
