"""The generated bitcoin.conf is accepted by the real bitcoind and does what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.node.bitcoin_conf import BitcoindLayout, render_bitcoin_conf
from functional.framework.node import RPCError, TestNode
from functional.framework.util import free_port

pytestmark = pytest.mark.node


def test_generated_conf_runs_bitcoind(tmp_path: Path, bitcoind_bindir: Path,
                                      timeout_factor: float) -> None:
    run = tmp_path / "run"
    run.mkdir()
    topics = ("rawblock", "rawtx", "hashblock", "sequence")
    cfg = load_config(None, env={}, overrides={
        "hearth": {"network": "regtest", "run_dir": str(run)},
        "node": {"bitcoin_dir": str(tmp_path / "btc"), "prune_mib": 550, "dbcache_mib": 50,
                 **{f"zmq_{t}": f"ipc://{run}/{t}.sock" for t in topics}},
    })
    rpc_port = free_port()
    conf = tmp_path / "bitcoin.conf"
    conf.write_text(render_bitcoin_conf(cfg, BitcoindLayout(
        rpc_port=rpc_port, p2p_bind=f"127.0.0.1:{free_port()}",
        extra={"dnsseed": "0", "fixedseeds": "0"})))
    node = TestNode(0, tmp_path / "btc", bitcoind_bindir, timeout_factor=timeout_factor,
                    rpc_port=rpc_port, conf_file=conf)
    node.start()
    try:
        assert node.cookie_file == cfg.cookie_file
        info = node.getblockchaininfo()
        assert info["chain"] == "regtest" and info["pruned"] is True
        assert info["prune_target_size"] == 550 * 1024 * 1024
        published = {n["type"].removeprefix("pub"): n["address"]
                     for n in node.getzmqnotifications()}
        assert published == {t: f"ipc://{run}/{t}.sock" for t in topics}
        assert node.getindexinfo()["basic block filter index"]["synced"] in (True, False)
        with pytest.raises(RPCError) as err:  # the box holds no keys
            node.listwallets()
        assert err.value.code == -32601
    finally:
        node.stop()
