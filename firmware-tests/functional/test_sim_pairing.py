"""End to end in `sim`: the setup link's QR drawn by the display code on luma's dummy
device is decoded from its PNG with zbarimg, the Noise pairing code that `appliance
pairing show` prints is paired with `appliance-client`, and Debian's
Electrum wallet reads its balance through the tunnel; a long press on the simulated
button then revokes the pairing and drops the connection."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from functional.framework.electrum_wallet import ElectrumWallet, electrum_available, vpub_of
from functional.framework.util import free_port, wait_until

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not (electrum_available() and shutil.which("zbarimg")),
                                 reason="Debian's electrum and zbar-tools come from setup")]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIM = [sys.executable, str(REPO / "scripts" / "sim.py")]


def decode_frame(png: Path, tmp: Path) -> str | None:
    """zbarimg on the panel frame, upscaled by an integer factor only (nearest)."""
    frame = Image.open(png)
    big = tmp / "frame-x4.png"
    frame.resize((frame.width * 4, frame.height * 4), Image.Resampling.NEAREST).save(big)
    out = subprocess.run(["zbarimg", "--raw", "-q", str(big)], capture_output=True, text=True)
    return out.stdout.strip() or None


def test_pair_from_the_oled_and_use_electrum_through_the_tunnel(tmp_path: Path) -> None:
    d = tmp_path / "sim"
    up = subprocess.run([*SIM, "up", "--dir", str(d)], capture_output=True, text=True,
                        timeout=240)
    assert up.returncode == 0, up.stderr
    connect: dict[str, Any] = json.loads((d / "connect.json").read_text())
    config = connect["config"]
    btc = connect["bitcoind"]
    cli = [str(Path(btc["bindir"]) / "bitcoin-cli"), f"-datadir={btc['datadir']}", "-regtest",
           f"-rpcport={btc['rpc_url'].rsplit(':', 1)[1]}"]

    def bitcoin(*args: str) -> Any:
        out = subprocess.run([*cli, *args], capture_output=True, text=True, check=True).stdout
        try:
            return json.loads(out)
        except ValueError:
            return out.strip()

    tunnel: subprocess.Popen[str] | None = None
    ew: ElectrumWallet | None = None
    try:
        # 1. The QR on the (simulated) OLED is the setup page's link; the Noise pairing
        # code for computers is what `appliance pairing show` prints.
        png = Path(connect["display"]["current"])
        wait_until(lambda: png.exists() and decode_frame(png, tmp_path) is not None,
                   timeout=30)
        link = connect["pairing"]["setup_url"]
        wait_until(lambda: decode_frame(png, tmp_path) == link, timeout=30)
        code = subprocess.run([str(BIN / "appliance"), "pairing", "show", "--config", config],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert code == connect["pairing"]["payload"]
        shown = subprocess.run([str(BIN / "appliance"), "pairing", "show", "--link", "--config",
                                config], capture_output=True, text=True, check=True)
        assert shown.stdout.strip() == link
        # It takes turns with the server string stock phone wallets scan (TLS, pinned).
        server = f"127.0.0.1:{connect['electrum']['tls_port']}:s"
        wait_until(lambda: decode_frame(png, tmp_path) == server, timeout=30)
        # 2. A watched wallet with coins.
        bitcoin("createwallet", "w1")
        desc = next(x["desc"] for x in bitcoin("-rpcwallet=w1", "listdescriptors")["descriptors"]
                    if x["desc"].startswith("wpkh(") and not x["internal"])
        vpub = vpub_of(desc.split("]")[1].split("/")[0])
        address = bitcoin("-rpcwallet=w1", "getnewaddress")
        bitcoin("-rpcwallet=sim", "sendtoaddress", address, "0.75")
        subprocess.run([*SIM, "mine", "1", "--dir", str(d)], check=True, capture_output=True)
        # 3. Pair this "desktop" with that code, register the wallet, open the tunnel.
        desktop = tmp_path / "desktop"
        pair = subprocess.run([str(BIN / "appliance-client"), "--state-dir", str(desktop),
                               "pair", code], capture_output=True, text=True, timeout=60)
        assert pair.returncode == 0, pair.stderr
        # The wallet is registered from the desktop, over the paired Noise channel.
        added = subprocess.run([str(BIN / "appliance-client"), "--state-dir", str(desktop),
                                "wallet", "add", vpub, "--birthday", "0"],
                               capture_output=True, text=True, timeout=180)
        assert added.returncode == 0 and "registered" in added.stdout, added.stderr
        port = free_port()
        tunnel = subprocess.Popen([str(BIN / "appliance-client"), "--state-dir", str(desktop),
                                   "tunnel", "--listen", f"127.0.0.1:{port}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tunnel.stdout is not None and "tunnel:" in tunnel.stdout.readline()
        # 4. Stock Electrum through the tunnel sees the balance.
        ew = ElectrumWallet(tmp_path / "electrum", vpub)
        ew.start(f"127.0.0.1:{port}:t")
        height = int(bitcoin("getblockcount"))
        wait_until(lambda: ew is not None and ew.synced_to(height)
                   and ew.total() == int(Decimal("0.75") * 100_000_000), timeout=60,
                   interval=0.5)
        # 5. Long press on the button: every pairing revoked, the connection dropped.
        subprocess.run([*SIM, "long-press", "--dir", str(d)], check=True, capture_output=True)
        wait_until(lambda: ew is not None and not ew.info().get("connected"), timeout=30,
                   interval=0.5)
        status = subprocess.run([str(BIN / "appliance-client"), "--state-dir", str(desktop),
                                 "status"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 1
        # ... and the screen shows a new link: the old token is gone.
        wait_until(lambda: decode_frame(png, tmp_path) not in (None, link, server), timeout=30)
    finally:
        if ew is not None:
            ew.stop()
        if tunnel is not None:
            # Ctrl-C ends the tunnel cleanly: exit 0, no traceback.
            tunnel.send_signal(signal.SIGINT)
            out, err = tunnel.communicate(timeout=10)
            assert tunnel.returncode == 0 and "Traceback" not in err, err
        subprocess.run([*SIM, "down", "--dir", str(d)], capture_output=True, timeout=120)
