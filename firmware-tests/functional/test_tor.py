"""The box as an onion service on a private Tor network on loopback (issue #17).

Debian's tor builds the network (framework/tornet.py); the box's own tor service joins it
with one %include. Then, all through Tor: a stock Electrum with --proxy on the onion
``:t`` address sees what bitcoind's wallet sees; ``appliance-client tunnel --tor`` carries
a second Electrum over the paired Noise channel; a key that is not paired gets nothing;
and a fresh data directory restored from the USB backup serves the same onion address.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.client.socks import SocksError, SocksProxy
from appliance.config import load_config
from appliance.identity import load_hsm_secret, recovery_phrase
from appliance.transport.noise import Keypair
from appliance.transport.stream import STREAM_ERRORS, connect
from appliance.usb.agent import UsbAgent
from appliance.usb.archive import encrypt_backup, scrypt_work_factor
from functional.framework.appliance import IndexerProcess
from functional.framework.electrum_wallet import ElectrumWallet, electrum_available, vpub_of
from functional.framework.node import TestNode
from functional.framework.tornet import TorNetwork
from functional.framework.util import APPLIANCE, CLIENT, free_port, stop_process, wait_until
from functional.test_electrum_wallet import account_tpub, assert_same

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not electrum_available(),
                                 reason="Debian's electrum is installed by ./build.sh test")]


class TorService:
    """``appliance run tor`` on a box's hearth.toml, with its log."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([APPLIANCE, "run", "tor", "--config", str(self.config)],
                                            stdout=out, stderr=subprocess.STDOUT)

    def wait_bootstrapped(self) -> None:
        def done() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            return "Bootstrapped 100%" in self.log.read_text(errors="replace")
        wait_until(done, timeout=150, interval=0.5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20)
            assert self.process.returncode == 0, self.log.read_text()[-3000:]
            self.process = None


@pytest.fixture
def tornet(tmp_path: Path) -> Iterator[TorNetwork]:
    net = TorNetwork(tmp_path / "tornet")
    net.start()
    yield net
    net.stop()


def tor_sections(include: Path) -> dict[str, dict[str, Any]]:
    return {"tor": {"socks_port": 0, "include": include}, "setup": {"port": 0}}


async def electrum_over_socks(proxy: SocksProxy, host: str, port: int) -> Any:
    reader, writer = await proxy.open_connection(host, port)
    try:
        writer.write(b'{"jsonrpc":"2.0","id":1,"method":"server.version","params":["t","1.4"]}\n')
        return json.loads(await asyncio.wait_for(reader.readline(), 60))
    finally:
        writer.close()


def reach_over_tor(proxy: SocksProxy, host: str, port: int) -> Any:
    """server.version over Tor, retried while the descriptor is not yet on the HSDirs."""
    def attempt() -> Any:
        try:
            return asyncio.run(electrum_over_socks(proxy, host, port))
        except (SocksError, OSError, TimeoutError):
            return None
    return wait_until(attempt, timeout=150, interval=2)


async def stranger_over_tor(proxy: SocksProxy, onion: str, port: int, box_key: bytes) -> list[bytes]:
    """A key the box never paired, over Tor: the handshake works (it is how the box learns
    the key), then the box hangs up without answering anything."""
    stream = await connect(onion, port, Keypair.generate(), box_key, timeout=90,
                           open_connection=proxy.open_connection)
    got: list[bytes] = []
    try:
        await stream.send(b'{"jsonrpc":"2.0","id":1,"method":"server.version","params":["x","1.4"]}\n')
        got.append(await stream.recv(timeout=30))
    except STREAM_ERRORS:
        pass
    finally:
        stream.close()
    return got


def test_the_box_over_a_private_tor_network(tmp_path: Path, node: TestNode,
                                            tornet: TorNetwork) -> None:
    include = tmp_path / "tornet.conf"
    include.write_text(tornet.network_torrc)
    socks_port = tornet.add_client()
    proxy = SocksProxy("127.0.0.1", socks_port)
    # A second client that never sees the original box: after the restore it must fetch
    # the restored box's descriptor (a client that cached the old one waits minutes for
    # its dead introduction points to time out, as a real phone would).
    later = SocksProxy("127.0.0.1", tornet.add_client("phone"))
    box = IndexerProcess(tmp_path / "box", node, sections=tor_sections(include))
    box.start()
    tor = TorService(box.config, tmp_path / "box" / "tor.log")
    tor.start()
    tunnel: subprocess.Popen[str] | None = None
    wallets: list[ElectrumWallet] = []
    try:
        node.createwallet("w1")
        vpub = vpub_of(account_tpub(node, "w1"))
        box.wallet_add(vpub)
        node.send(node.rpc("getnewaddress", wallet="w1"), "1.5")
        node.mine(1)
        node.send(node.rpc("getnewaddress", wallet="w1"), "0.25")  # one in the mempool
        box.wait_synced()
        found = json.loads(box.cli("tor", "address", "--json").stdout)
        onion = found["onion"]
        assert found["electrum_tcp"] == f"{onion}:{box.tcp_port}:t"
        assert (box.base / "data" / "tor" / "onion" / "hostname").read_text().strip() == onion

        tor.wait_bootstrapped()
        tornet.wait_bootstrapped("client")

        def bus_says_ready() -> bool:  # what `appliance status` and the OLED read
            st = (box.status()["services"].get("tor") or {}).get("status") or {}
            return bool(st.get("phase") == "ready" and st["counters"]["tor_bootstrap"] == 100)
        wait_until(bus_says_ready, timeout=30)
        assert onion not in box.cli("status").stdout  # the address stays off the bus
        assert reach_over_tor(proxy, onion, box.tcp_port)["result"][1] == "1.4"

        # 1. Stock Electrum with --proxy, on the onion :t address.
        ew = ElectrumWallet(tmp_path / "electrum-onion", vpub)
        wallets.append(ew)
        ew.start(found["electrum_tcp"], proxy=f"socks5:127.0.0.1:{socks_port}")
        assert_same(ew, node, "w1", timeout=150)

        # 2. Paired on the LAN, then the tunnel over Tor: the pair reply told the onion.
        desktop = tmp_path / "desktop"
        subprocess.run([CLIENT, "--state-dir", str(desktop), "pair",
                        box.cli("pairing", "show").stdout.strip()], check=True, timeout=60)
        assert json.loads((desktop / "box.json").read_text())["onion"] == onion
        listen = free_port()
        tunnel = subprocess.Popen([CLIENT, "--state-dir", str(desktop), "tunnel", "--tor",
                                   f"127.0.0.1:{socks_port}", "--listen", f"127.0.0.1:{listen}"],
                                  stdout=subprocess.PIPE, text=True)
        assert tunnel.stdout is not None
        assert f"-> box {onion}:{box.noise_port}" in tunnel.stdout.readline()
        ew2 = ElectrumWallet(tmp_path / "electrum-tunnel", vpub)
        wallets.append(ew2)
        ew2.start(f"127.0.0.1:{listen}:t")
        node.mine(1)
        assert_same(ew2, node, "w1", timeout=150)
        assert_same(ew, node, "w1", timeout=150)

        # 3. An unpaired key over Tor gets nothing.
        box_key = bytes.fromhex(box.status()["indexer"]["pairing"]["box_key"])
        assert asyncio.run(stranger_over_tor(proxy, onion, box.noise_port, box_key)) == []

        # 4. The USB backup restored onto a fresh data directory: the same onion address,
        # served by the restored box's tor (its listeners are the running box's ports).
        cfg = load_config(box.config)
        secret = load_hsm_secret(cfg.hsm_secret_file)
        phrase = " ".join(recovery_phrase(secret))
        backup = tmp_path / "hearth-backup.age"
        backup.write_bytes(encrypt_backup(UsbAgent(cfg).contents(secret), phrase))
        fresh = tmp_path / "fresh.toml"
        fresh.write_text(box.config.read_text().replace(str(box.base / "data"),
                                                        str(tmp_path / "fresh-data")))
        done = subprocess.run([APPLIANCE, "restore", str(backup), "--config", str(fresh),
                               "--phrase-file", "-"], input=phrase + "\n", capture_output=True,
                              text=True, timeout=120)
        # (the scrypt cost is shown too: a file above the fixed 2^22 limit is refused.)
        assert done.returncode == 0, (done.stderr, scrypt_work_factor(backup.read_bytes()))
        restored_address = subprocess.run([APPLIANCE, "tor", "address", "--json", "--config",
                                           str(fresh)], capture_output=True, text=True, check=True)
        assert json.loads(restored_address.stdout)["onion"] == onion
        tornet.wait_bootstrapped("phone")
        tor.stop()
        restored = TorService(fresh, tmp_path / "restored-tor.log")
        restored.start()
        try:
            restored.wait_bootstrapped()
            assert (tmp_path / "fresh-data" / "tor" / "onion" / "hostname").read_text().strip() \
                == onion
            assert reach_over_tor(later, onion, box.tcp_port)["result"][1] == "1.4"
        finally:
            restored.stop()
    except AssertionError:
        print(tornet.logs())
        raise
    finally:
        for ew in wallets:
            ew.stop()
        if tunnel is not None:
            stop_process(tunnel)
            if tunnel.stdout is not None:
                tunnel.stdout.close()
        tor.stop()
        box.stop()
