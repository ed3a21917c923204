"""The phone path, end to end in `sim`: the OLED's QR (decoded from the frame with
zbarimg) opens the setup page in Debian's Chromium at a phone's viewport, the box's
self-signed certificate is accepted by its key, a vpub is pasted, the backfill is
watched until "ready", and Debian's Electrum, set up with the server string the page
shows, agrees with bitcoind's own wallet. Then the page's defences, over raw HTTPS:
no session, used or superseded links, CSRF, revocation, the long press, bad bodies and
the redemption rate limit, with the counters on the status bus.

Screenshots go to <tmp>/shots (docs/img/setup-*.png are copies of the best ones).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from appliance.setup.views import forbidden_page
from appliance.tls import certificate_fingerprint
from functional.framework.browser import Phone, chromium_path
from functional.framework.electrum_wallet import ElectrumWallet, electrum_available, vpub_of
from functional.framework.qrphoto import qr_photo
from functional.framework.util import free_port, wait_until

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not (electrum_available() and shutil.which("zbarimg")
                                      and chromium_path()),
                                 reason="Debian's electrum, zbar-tools and chromium come "
                                        "from setup")]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIM = [sys.executable, str(REPO / "scripts" / "sim.py")]
PORT_NAMES = ("rpc", "p2p", "electrum_tcp", "electrum_tls", "noise", "tower_http",
              "tower_https", "tower_noise", "backup", "setup")


@dataclass
class Sim:
    dir: Path
    tmp: Path
    connect: dict[str, Any]

    @property
    def config(self) -> str:
        return str(self.connect["config"])

    @property
    def cert(self) -> bytes:
        return (self.dir / "data" / "indexer" / "electrum-cert.pem").read_bytes()

    def run(self, *args: str) -> None:
        subprocess.run([*SIM, *args, "--dir", str(self.dir)], check=True, capture_output=True,
                       timeout=120)

    def bitcoin(self, *args: str) -> Any:
        out = subprocess.run([*SIM, "cli", "--dir", str(self.dir), *args], capture_output=True,
                             text=True, check=True).stdout
        try:
            return json.loads(out)
        except ValueError:
            return out.strip()

    def frame_code(self) -> str | None:
        """zbarimg on the panel frame, upscaled by an integer factor only (nearest)."""
        frame = Image.open(self.connect["display"]["current"])
        big = self.tmp / "frame-x4.png"
        frame.resize((frame.width * 4, frame.height * 4), Image.Resampling.NEAREST).save(big)
        out = subprocess.run(["zbarimg", "--raw", "-q", str(big)], capture_output=True,
                             text=True)
        return out.stdout.strip() or None

    def setup_link(self) -> str:
        """The setup link on the OLED (it takes turns with the stock-wallet server string)."""
        seen: list[str] = []

        def link() -> str | None:
            code = self.frame_code()
            seen.append(str(code))
            return code if code and code.startswith("HTTPS://") else None
        found: str = wait_until(link, timeout=40, interval=0.5)
        return found

    def status(self) -> dict[str, Any]:
        out = subprocess.run([str(BIN / "appliance"), "status", "--json", "--config",
                              self.config], capture_output=True, text=True)
        report: dict[str, Any] = json.loads(out.stdout)
        return report


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    tmp = tmp_path_factory.mktemp("setup-page")
    d = tmp / "sim"
    d.mkdir()
    (d / "ports.json").write_text(json.dumps({name: free_port() for name in PORT_NAMES}))
    up = subprocess.run([*SIM, "up", "--dir", str(d)], capture_output=True, text=True,
                        timeout=240)
    try:
        assert up.returncode == 0, up.stderr
        yield Sim(d, tmp, json.loads((d / "connect.json").read_text()))
    finally:
        subprocess.run([*SIM, "down", "--dir", str(d)], capture_output=True, timeout=120)


def _electrum_matches_bitcoind(ew: ElectrumWallet, sim: Sim) -> bool:
    """Balance, history and UTXOs of Electrum's wallet equal bitcoind's wallet w1's."""
    height = int(sim.bitcoin("getblockcount"))
    if not ew.synced_to(height):
        return False
    mine = sim.bitcoin("-rpcwallet=w1", "getbalances")["mine"]
    total = int((Decimal(str(mine["trusted"])) + Decimal(str(mine["untrusted_pending"]))
                 + Decimal(str(mine["immature"]))) * 100_000_000)
    history = {(t["txid"], int(t.get("blockheight", 0)))
               for t in sim.bitcoin("-rpcwallet=w1", "listtransactions", "*", "1000")}
    utxos = {(u["txid"], int(u["vout"]), int(Decimal(str(u["amount"])) * 100_000_000))
             for u in sim.bitcoin("-rpcwallet=w1", "listunspent", "0")}
    return ew.total() == total and ew.history() == history and ew.utxos() == utxos


def test_a_phone_sets_up_a_stock_wallet(sim: Sim) -> None:
    shots = sim.tmp / "shots"
    shots.mkdir()
    # A wallet with history from before it is registered: three payments in three of
    # 210 new blocks, so that its backfill takes a moment.
    sim.bitcoin("createwallet", "w1")
    desc = next(x["desc"] for x in sim.bitcoin("-rpcwallet=w1", "listdescriptors")["descriptors"]
                if x["desc"].startswith("wpkh(") and not x["internal"])
    vpub = vpub_of(desc.split("]")[1].split("/")[0])
    for amount in ("0.5", "0.25", "1.125"):
        address = sim.bitcoin("-rpcwallet=w1", "getnewaddress")
        sim.bitcoin("-rpcwallet=sim", "sendtoaddress", address, amount)
        sim.run("mine", "70")
    # 1. The OLED shows the setup link; its frame is the first screenshot.
    link = sim.setup_link()
    assert urlsplit(link).path.startswith("/P/") and link == link.upper()
    Image.open(sim.connect["display"]["current"]).resize((512, 256), Image.Resampling.NEAREST) \
        .save(shots / "0-oled.png")
    phone = Phone(sim.tmp / "chromium", shots, sim.cert)
    ew: ElectrumWallet | None = None
    try:
        # 2. The camera opens it: the browser is paired and lands on the page.
        phone.goto(link)
        # It names the start of the certificate's fingerprint, as the OLED does.
        fingerprint = certificate_fingerprint(sim.cert)
        assert "This browser is now paired" in phone.text()
        assert fingerprint[:23] in phone.text()
        phone.screenshot("1-paired")
        wait_until(lambda: urlsplit(phone.url()).path == "/" and "Add a wallet" in phone.text(),
                   timeout=20, interval=0.3)
        phone.screenshot("2-page")
        assert fingerprint[:23] in phone.text()
        # 3. A user who scanned only the server string: Electrum asks about an unknown
        # wallet, and the OLED says how to fix it.
        server = str(phone.eval("document.getElementById('server').innerText"))
        assert server.endswith(":s") and server.split(":")[1] == \
            str(sim.connect["electrum"]["tls_port"])
        ew = ElectrumWallet(sim.tmp / "electrum", vpub)
        ew.start(server)
        wait_until(lambda: _display_page(sim) == "ErrorPage", timeout=30, interval=0.5)
        Image.open(sim.connect["display"]["current"]).resize(
            (512, 256), Image.Resampling.NEAREST).save(shots / "3-oled-unknown-wallet.png")
        # 4. A private key pasted by mistake is refused in words, and nothing is stored.
        private = next(x["desc"] for x in sim.bitcoin("-rpcwallet=w1", "listdescriptors",
                                                       "true")["descriptors"]
                       if x["desc"].startswith("wpkh(") and not x["internal"])
        tprv = re.search(r"tprv\w+", private)
        assert tprv is not None
        phone.paste("#key", tprv.group())
        phone.eval("document.querySelector('input[value=new]').checked = true")
        phone.click_and_wait("#add")
        assert "That is a private key" in phone.text() and "none yet" in phone.text()
        assert phone.eval("document.getElementById('key').value") == ""  # not echoed back
        phone.screenshot("4-private-key-refused")
        # 5. Photograph the vpub's QR instead (the file input the camera fills): the box
        # reads it and shows it for confirmation; give the date it was made, add it.
        photo = sim.tmp / "IMG_0001.jpg"
        photo.write_bytes(qr_photo(vpub, size=(3000, 2250), angle=6))
        phone.choose_file("#photo", photo)
        phone.click_and_wait("#scan")
        assert "Read from the photo" in phone.text(), phone.text()
        assert phone.eval("document.getElementById('key').value") == vpub
        assert "none yet" in phone.text()  # nothing added before the person confirms
        phone.screenshot("5-scanned")
        phone.eval("document.querySelector('input[value=date]').checked = true")
        phone.eval("document.querySelector('input[name=label]').value = 'Phone wallet'")
        phone.eval(f"document.querySelector('input[name=date]').value = "
                   f"'{dt.date.today().isoformat()}'")
        phone.screenshot("5-filled")
        phone.click_and_wait("#add")
        assert urlsplit(phone.url()).path.startswith("/w/"), phone.text()
        # 6. Progress, then ready (the page refreshes itself).
        # (210 blocks to look through: seconds on this machine, so progress shows first.)
        assert "Looking back through the chain" in phone.text(), phone.text()
        phone.screenshot("6-progress")
        wait_until(lambda: "Ready" in phone.text(), timeout=120, interval=0.5)
        phone.screenshot("7-ready")
        assert server in phone.text()
        # 7. Stock Electrum, on the server string from the page, agrees with bitcoind.
        wait_until(lambda: ew is not None and _electrum_matches_bitcoind(ew, sim), timeout=90,
                   interval=1.0)
        assert ew.total() == int(Decimal("1.875") * 100_000_000)
        # The wallet is listed on the main page as ready.
        phone.goto(link.lower().split("/p/")[0] + "/")
        assert "Phone wallet" in phone.text() and "Ready" in phone.text()
    finally:
        if ew is not None:
            ew.stop()
        phone.close()


def _display_page(sim: Sim) -> str | None:
    display = sim.status()["services"].get("display") or {}
    status = display.get("status") or {}
    return status.get("detail")


# --- the defences, over raw HTTPS ---------------------------------------------------------

class Client:
    """One HTTPS client that checks the box's certificate by fingerprint (pinned)."""

    def __init__(self, sim: Sim) -> None:
        self.port = int(sim.connect["setup"]["port"])
        self.fingerprint = hashlib.sha256(
            ssl.PEM_cert_to_DER_cert(sim.cert.decode())).digest()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE  # self-signed: pinned below instead

    def request(self, method: str, path: str, *, cookie: str | None = None,
                body: bytes | None = None, content_type: str | None = None
                ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=30)
        try:
            conn.connect()
            assert conn.sock is not None
            der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            assert hashlib.sha256(der).digest() == self.fingerprint, "not the box's cert"
            headers = {}
            if cookie:
                headers["Cookie"] = cookie
            if content_type:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
                resp.read().decode(errors="replace")
        finally:
            conn.close()

    def redeem(self, link: str) -> tuple[int, str | None]:
        status, headers, _ = self.request("GET", urlsplit(link).path)
        cookie = headers.get("set-cookie")
        if cookie is not None:  # script-proof, HTTPS only, never sent by another site
            assert {"HttpOnly", "Secure", "SameSite=Strict"} <= {
                part.strip() for part in cookie.split(";")}, cookie
        return status, cookie.split(";")[0] if cookie else None

    def csrf(self, cookie: str) -> str:
        status, _, body = self.request("GET", "/", cookie=cookie)
        assert status == 200, body
        return body.split('name="csrf" value="')[1].split('"')[0]

    def post(self, path: str, cookie: str | None, fields: dict[str, str]) -> int:
        body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
        return self.request("POST", path, cookie=cookie, body=body,
                            content_type="application/x-www-form-urlencoded")[0]


def _new_link(sim: Sim) -> str:
    sim.run("press")
    link = json.loads((sim.dir / "connect.json").read_text())["pairing"]["setup_url"]
    assert link and link.startswith("HTTPS://")
    return str(link)


def test_the_page_refuses_what_it_must(sim: Sim) -> None:
    c = Client(sim)
    before = _setup_counters(sim)
    # No session: nothing, not even the status, for any path or method.
    for method, path in (("GET", "/"), ("GET", "/w/00"), ("POST", "/wallets"),
                         ("POST", "/pairing/open"), ("GET", "/nothing-here")):
        status, _, body = c.request(method, path)
        assert (status, body) == (403, forbidden_page()), path
    # A link works once; the same link again is refused.
    link = _new_link(sim)
    status, cookie = c.redeem(link)
    assert status == 200 and cookie is not None
    assert c.redeem(link) == (403, None)
    # A link whose window closed (a new press drew new tokens) is refused.
    old = _new_link(sim)
    _new_link(sim)
    assert c.redeem(old) == (403, None)
    # CSRF: missing or forged refused, the right one accepted.
    csrf = c.csrf(cookie)
    assert c.post("/pairing/open", cookie, {}) == 403
    assert c.post("/pairing/open", cookie, {"csrf": "0" * 32}) == 403
    assert c.post("/pairing/open", cookie, {"csrf": csrf}) == 303
    # Garbage and oversize bodies: a clear 4xx, and the service stays up.
    pid = _setup_pid(sim)
    assert c.request("POST", "/wallets", cookie=cookie, body=b"\xff\x00" * 500,
                     content_type="application/x-www-form-urlencoded")[0] in (400, 403)
    assert c.request("POST", "/wallets", cookie=cookie, body=b"{}",
                     content_type="application/json")[0] == 400
    assert c.request("POST", "/wallets", cookie=cookie, body=b"k=" + b"a" * 100_000,
                     content_type="application/x-www-form-urlencoded")[0] == 413
    assert c.post("/wallets", cookie, {"csrf": csrf, "key": "nonsense", "when": "new"}) == 400
    status, _, body = c.request("POST", "/wallets", cookie=cookie,
                                content_type="application/x-www-form-urlencoded",
                                body=f"csrf={csrf}&key=tprv8ZgxMBicQKsPd&when=new".encode())
    assert status == 400 and "private key" in body or "damaged" in body, body
    assert c.request("GET", "/", cookie=cookie)[0] == 200 and _setup_pid(sim) == pid
    # A session revoked one by one is refused at once; `appliance pairing list` lists it.
    status, second = c.redeem(_new_link(sim))
    assert status == 200 and second is not None
    listed = subprocess.run([str(BIN / "appliance"), "pairing", "list", "--json", "--config",
                             sim.config], capture_output=True, text=True, check=True)
    webs = [d for d in json.loads(listed.stdout) if d["kind"] == "web"]
    assert len(webs) >= 2
    second_key = _session_key(second)
    assert second_key in {d["key"] for d in webs}
    assert c.post(f"/devices/{second_key}/revoke", cookie, {"csrf": csrf}) == 303
    assert c.request("GET", "/", cookie=second)[0] == 403
    assert c.request("GET", "/", cookie=cookie)[0] == 200
    # The long press revokes every session.
    sim.run("long-press")
    wait_until(lambda: c.request("GET", "/", cookie=cookie)[0] == 403, timeout=30,
               interval=0.5)
    # Wrong links, many: after 10 failures in a minute (2 above) every redemption waits,
    # even a right one; all of it counted on the status bus.
    statuses = [c.redeem(f"HTTPS://x/P/{'A' * 13}")[0] for _ in range(9)]
    assert statuses == [403] * 8 + [429]
    assert c.redeem(_new_link(sim)) == (429, None)
    counters = wait_until(lambda: _setup_counters(sim) if _setup_counters(sim).get(
        "redeem_limited") else None, timeout=15, interval=0.5)
    grew = {k: counters[k] - before.get(k, 0) for k in counters}
    assert grew["redeem_failed"] == 10 and grew["redeem_limited"] == 2
    assert grew["csrf_refused"] == 2 and grew["redeemed"] == 2 and grew["no_session"] >= 5


def _session_key(cookie: str) -> str:
    from appliance.setup.sessions import parse_cookie

    session = parse_cookie(cookie.split("=", 1)[1])
    assert session is not None
    return session.key_hash.hex()


def _setup_pid(sim: Sim) -> str:
    out = subprocess.run([str(BIN / "supervisorctl"), "-c", str(sim.dir / "supervisord.conf"),
                          "pid", "hearth-setup"], capture_output=True, text=True)
    return out.stdout.strip()


def _setup_counters(sim: Sim) -> dict[str, Any]:
    setup = sim.status()["services"].get("setup") or {}
    counters: dict[str, Any] = (setup.get("status") or {}).get("counters") or {}
    return counters
