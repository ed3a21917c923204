"""Debian's real tor reads the onion key we derive and reports the address we compute."""

from __future__ import annotations

import subprocess
from pathlib import Path

from appliance.config import load_config
from appliance.identity import write_secret_file
from appliance.tor.keys import derive_onion_key
from appliance.tor.service import prepare

from .framework.util import stop_process, wait_until


def test_tor_reports_the_hostname_of_the_key_we_write(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"hearth": {"data_dir": str(tmp_path)},
                                               "tor": {"socks_port": 0}})
    secret = bytes.fromhex("5f" * 32)
    write_secret_file(cfg.hsm_secret_file, secret)
    prepare(cfg)  # the service's own files: key, hostname, torrc
    expected = derive_onion_key(secret).address
    hostname = cfg.onion_service_dir / "hostname"
    hostname.unlink()  # tor writes it from the key file alone
    # The torrc the service writes, with the network off (nothing to reach here).
    log = tmp_path / "tor.log"
    with open(log, "w") as out:
        tor = subprocess.Popen(["tor", "-f", str(cfg.torrc_file), "--defaults-torrc",
                                "/dev/null", "--DisableNetwork", "1"],
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(hostname.exists, timeout=30)
            assert hostname.read_text().strip() == expected
        finally:
            stop_process(tor)
    assert "[err]" not in log.read_text(), log.read_text()
