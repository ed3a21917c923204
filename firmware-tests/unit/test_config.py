"""appliance.config: one declared spec, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, dump_toml, load_config, render_reference

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hearth.toml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    cfg = load_config(None, env={})
    assert cfg.hearth.network == "mainnet"
    assert cfg.rpc_url == "http://127.0.0.1:8332"
    assert cfg.cookie_file == Path("/var/lib/bitcoind/.cookie")
    assert cfg.service_dir("indexer") == Path("/var/lib/hearth/indexer")


def test_file_values_and_derived_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[hearth]\nnetwork = "regtest"\n'
                                      '[node]\nbitcoin_dir = "/srv/btc"\nrpc_timeout = 5\n'), env={})
    assert cfg.chain == "regtest"
    assert cfg.rpc_url == "http://127.0.0.1:18443"
    assert cfg.cookie_file == Path("/srv/btc/regtest/.cookie")
    assert cfg.node.rpc_timeout == 5.0
    testnet = load_config(write(tmp_path, '[hearth]\nnetwork = "testnet"\n'), env={})
    assert testnet.cookie_file == Path("/var/lib/bitcoind/testnet3/.cookie")


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nprune_mib = 600\n')
    cfg = load_config(path, env={"HEARTH_NODE_PRUNE_MIB": "1000", "HEARTH_LOG_LEVEL": "debug"})
    assert cfg.node.prune_mib == 1000
    assert cfg.log.level == "debug"


@pytest.mark.parametrize(("text", "env", "names"), [
    ('[nodes]\nx = 1\n', {}, "nodes: unknown section"),
    ('[node]\nrpc_ur = "x"\n', {}, "node.rpc_ur: unknown key"),
    ('[node]\nprune_mib = "lots"\n', {}, "node.prune_mib: expected int"),
    ('[node]\nprune_mib = true\n', {}, "node.prune_mib: expected int"),
    ('[node]\nprune_mib = 100\n', {}, "node.prune_mib: must be 0 (off), 1 (manual) or >= 550"),
    ('[node]\nrpc_timeout = 0\n', {}, "node.rpc_timeout: must be >= 0.1"),
    ('[hearth]\nnetwork = "moon"\n', {}, "hearth.network: must be one of"),
    ('[log]\nlevel = 3\n', {}, "log.level: expected str"),
    ('node = 3\n', {}, "node: must be a table"),
    ('[node\n', {}, "not valid TOML"),
    ('', {"HEARTH_NODE_PRUNE_MIB": "x"}, "HEARTH_NODE_PRUNE_MIB: expected int"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                 names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    assert names in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_docs_config_reference_is_current() -> None:
    doc = (REPO / "docs" / "config.md").read_text()
    assert render_reference() in doc, "run: appliance config reference, paste into docs/config.md"


def test_dump_toml_writes_what_load_config_reads(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird \\ dir ü'
    path = tmp_path / "hearth.toml"
    path.write_text(dump_toml({
        "hearth": {"network": "regtest", "data_dir": odd, "run_dir": odd / "run"},
        "electrum": {"tcp_port": 50001, "hostname": None},  # None: not written
        "usb": {"phrase_gate": False}, "node": {"rpc_timeout": 5.5}}))
    cfg = load_config(path, env={})
    assert cfg.hearth.data_dir == odd and cfg.hearth.run_dir == odd / "run"
    assert cfg.electrum.tcp_port == 50001 and not cfg.usb.phrase_gate
    assert cfg.node.rpc_timeout == 5.5 and "hostname" not in path.read_text()


@pytest.mark.parametrize(("tables", "message"), [
    ({"hearth": {"bad key": 1}}, "not a hearth.toml key"),
    ({"hearth": {"network": ["regtest"]}}, "unsupported value"),
])
def test_dump_toml_refuses_what_hearth_toml_cannot_hold(tables: dict[str, dict[str, object]],
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dump_toml(tables)
