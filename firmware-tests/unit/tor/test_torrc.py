"""torrc from hearth.toml, tor's bootstrap lines, and `appliance tor address`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.identity import write_secret_file
from appliance.node.bitcoin_conf import render_bitcoin_conf
from appliance.tor import cli
from appliance.tor.progress import parse_bootstrap
from appliance.tor.torrc import render_torrc

ONION = "5wj6iy5d5dx3nq2hqjx5qyg5u2tebjrywxixfyce6z2yko2bptkguuqd.onion"


def test_torrc_maps_each_public_port_to_its_listener(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"hearth": {"data_dir": str(tmp_path)},
                                               "transport": {"bind": "192.168.1.5"}})
    text = render_torrc(cfg)
    assert f"HiddenServiceDir {tmp_path}/tor/onion" in text
    assert "HiddenServicePort 50001 127.0.0.1:50001" in text
    assert "HiddenServicePort 50002 127.0.0.1:50002" in text
    assert "HiddenServicePort 50003 192.168.1.5:50003" in text
    assert "HiddenServicePort 8443 127.0.0.1:8443" in text
    assert "SocksPort 127.0.0.1:9050" in text and "%include" not in text


def test_torrc_leaves_out_ports_that_are_off(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={
        "hearth": {"data_dir": str(tmp_path)}, "electrum": {"tcp_port": 0, "tls": "off"},
        "setup": {"port": 0}, "tor": {"socks_port": 0, "include": "/etc/hearth/tor-extra"}})
    ports = [ln for ln in render_torrc(cfg).splitlines() if ln.startswith("HiddenServicePort")]
    assert ports == ["HiddenServicePort 50003 127.0.0.1:50003"]
    assert "SocksPort 0" in render_torrc(cfg)
    assert "%include /etc/hearth/tor-extra" in render_torrc(cfg)


@pytest.mark.parametrize("line, percent", [
    ("Dec 04 14:30:40.000 [notice] Bootstrapped 0% (starting): Starting", 0),
    ("[notice] Bootstrapped 45% (requesting_descriptors): Asking for relay descriptors", 45),
    ("Bootstrapped 100% (done): Done", 100),
    ("[notice] Starting with guard context \"default\"", None),
    ("Bootstrapped 900% (odd)", None),
])
def test_bootstrap_lines(line: str, percent: int | None) -> None:
    assert parse_bootstrap(line) == percent


def test_node_tor_settings_write_bitcoinds_proxy(tmp_path: Path) -> None:
    also = render_bitcoin_conf(load_config(None, env={}, overrides={"node": {"tor": "also"}}))
    assert "onion=127.0.0.1:9050" in also and "onlynet" not in also and "proxy=" not in also
    only = render_bitcoin_conf(load_config(None, env={}, overrides={"node": {"tor": "onion-only"}}))
    assert "proxy=127.0.0.1:9050" in only and "onlynet=onion" in only
    off = render_bitcoin_conf(load_config(None, env={}))
    assert "onion=" not in off and "proxy=" not in off
    with pytest.raises(ConfigError, match="node.tor"):
        load_config(None, env={}, overrides={"node": {"tor": "also"}, "tor": {"enabled": False}})


def test_tor_address_prints_the_strings_for_wallets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(None, env={}, overrides={"hearth": {"data_dir": str(tmp_path)}})
    args = argparse.Namespace(json=False)
    assert cli.run(cfg, args) == 1  # no hsm_secret yet
    assert "no hsm_secret" in capsys.readouterr().err
    write_secret_file(cfg.hsm_secret_file, bytes(range(32)))
    assert cli.run(cfg, args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    assert lines == [f"{ONION}:50001:t", f"{ONION}:50002:s", f"{ONION}:50003",
                     f"https://{ONION}:8443/"]
    off = load_config(None, env={}, overrides={"hearth": {"data_dir": str(tmp_path)},
                                               "tor": {"enabled": False}})
    assert cli.run(off, args) == 1
