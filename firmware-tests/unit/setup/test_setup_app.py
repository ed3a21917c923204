"""The setup page's routes over a fake BoxAPI (the Protocol the service implements over
the real control sockets; the end-to-end test is functional/test_setup_page.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from functional.framework.qrphoto import qr_photo

from appliance.control import ControlError
from appliance.control.messages import Branch, PairedClientInfo, WalletAdded, WalletSummary
from appliance.setup.app import Counters, make_app
from appliance.setup.scan import MAX_PHOTO_BYTES
from appliance.setup.sessions import COOKIE_NAME, RedeemLimiter, Session

VPUB = ("vpub5Xzfrm6ouSBPEvS1a3ZWBePKFrvz2XEJC82RaNGNvCrcm4t7xL3Tfad4aDNuzs1wPnuSJm7n973r5"
        "xyXXpyVdowWfyor2od9C5kMDfifEZH")


class FakeBox:
    network = "regtest"
    fingerprint = "AB:CD:EF:01:23:45:67:89"
    onion: str | None = None

    def __init__(self) -> None:
        self.token = b"\x01" * 8
        self.paired: dict[str, str] = {}  # key hash hex -> label
        self.wallets: list[WalletSummary] = []
        self.opened = 0
        self.counters = Counters()  # what the app publishes on the status bus

    def is_paired(self, session: Session) -> bool:
        return session.key_hash.hex() in self.paired

    async def redeem(self, token: bytes, session: Session, label: str) -> None:
        if token != self.token:
            raise ControlError("refused")
        self.token = b""
        self.paired[session.key_hash.hex()] = label

    async def wallet_add(self, items: list[str], birthday: int | None,
                         label: str) -> WalletAdded:
        if items[0].startswith("tprv"):
            raise ControlError("that is a private key: Hearth only takes public keys")
        branches = [Branch(d, 20, 0) for d in ("receive", "change")]
        wallet = WalletSummary("ab" * 8, label, "live", birthday, 20, 20, branches, None, [], None)
        self.wallets.append(wallet)
        return WalletAdded(True, wallet)

    async def wallet_list(self) -> list[WalletSummary]:
        return self.wallets

    async def wallet_remove(self, wallet_id: str) -> None:
        self.wallets = [w for w in self.wallets if w.id != wallet_id]

    async def devices(self) -> list[PairedClientInfo]:
        return [PairedClientInfo(k, v, 0.0, "web", 0) for k, v in self.paired.items()]

    async def revoke(self, key: str) -> None:
        if self.paired.pop(key, None) is None:
            raise ControlError(f"no single paired client with key {key!r}")

    async def pairing_open(self) -> None:
        self.opened += 1

    async def noise_code(self) -> str | None:
        return None

    async def tls_port(self) -> int | None:
        raise ControlError("the indexer is not running")  # a part the page does without

    async def watchtower_url(self) -> str | None:
        return None

    async def birthday_for(self, day: dt.date | None) -> int:
        return 7 if day is None else 3

    def status_lines(self) -> tuple[str, list[str]]:
        return "Node synced at height 6", ["node  ready"]


def run(test: Callable[[TestClient[Any, Any], FakeBox], Awaitable[None]]) -> None:
    async def main() -> None:
        box = FakeBox()
        app = make_app(box, RedeemLimiter(limit=3), box.counters)
        async with TestClient(TestServer(app)) as client:
            await test(client, box)
    asyncio.run(main())


def test_head_does_not_use_the_link_up_and_get_pairs_once() -> None:
    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        assert (await client.head("/P/AEAQCAIBAEAQC")).status == 405
        assert box.token  # still unused
        first = await client.get("/P/AEAQCAIBAEAQC")
        assert first.status == 200 and COOKIE_NAME in first.cookies
        assert (await client.get("/P/AEAQCAIBAEAQC")).status == 403
    run(test)


async def _pair(client: TestClient[Any, Any]) -> dict[str, str]:
    """The session cookie as a header: the test server is plain HTTP, where a client
    (rightly) keeps a Secure cookie to itself."""
    resp = await client.get("/P/AEAQCAIBAEAQC")
    return {"Cookie": f"{COOKIE_NAME}={resp.cookies[COOKIE_NAME].value}"}


def test_paired_browser_adds_removes_and_unpairs_itself() -> None:
    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        h = await _pair(client)
        page = await (await client.get("/", headers=h)).text()
        assert "Node synced at height 6" in page and "not up yet" in page  # no TLS port
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        refused = await client.post("/wallets", data={"csrf": csrf, "key": "tprv8Zgx",
                                                      "when": "new"}, headers=h)
        body = await refused.text()
        assert refused.status == 400 and "private key" in body and "tprv8Zgx" not in body
        bad_date = await client.post("/wallets", data={"csrf": csrf, "key": "vpub5",
                                                       "when": "date", "date": "soon"}, headers=h)
        assert bad_date.status == 400 and "Pick the date" in await bad_date.text()
        added = await client.post("/wallets", data={"csrf": csrf, "key": "vpub5 ",
                                                    "when": "new", "label": "<b>"},
                                  allow_redirects=False, headers=h)
        assert added.status == 303 and added.headers["Location"] == "/w/" + "ab" * 8
        assert box.wallets[0].birthday == 7 and box.wallets[0].label == "<b>"
        assert "&lt;b&gt;" in await (await client.get("/w/" + "ab" * 8, headers=h)).text()
        assert (await client.get("/w/nope", headers=h)).status == 404
        removed = await client.post(f"/wallets/{'ab' * 8}/remove", data={"csrf": csrf},
                                    allow_redirects=False, headers=h)
        assert removed.status == 303 and box.wallets == []
        me = next(iter(box.paired))
        gone = await client.post(f"/devices/{me}/revoke", data={"csrf": csrf}, headers=h)
        assert "no longer paired" in await gone.text()
        assert (await client.get("/", headers=h)).status == 403
    run(test)


def test_the_connect_section_gives_the_onion_server_when_tor_is_on() -> None:
    onion = "5wj6iy5d5dx3nq2hqjx5qyg5u2tebjrywxixfyce6z2yko2bptkguuqd.onion"

    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        h = await _pair(client)
        assert 'id="onion"' not in await (await client.get("/", headers=h)).text()  # tor off
        box.onion = onion
        box.tls_port = _port  # type: ignore[method-assign]
        page = await (await client.get("/", headers=h)).text()
        assert f'<code class=big id="onion">{onion}:50002:s</code>' in page
    run(test)


async def _port() -> int | None:
    return 50002


def test_every_answer_carries_the_security_headers() -> None:
    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        for resp in (await client.get("/"), await client.get("/P/x"),
                     await client.post("/wallets", data=b"x" * 20000)):
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["Cache-Control"] == "no-store"
    run(test)


def _photo_form(csrf: str | None, photo: bytes | None, *, photo_first: bool = False) -> FormData:
    form = FormData()
    fields: list[tuple[str, Any]] = []
    if csrf is not None:
        fields.append(("csrf", csrf))
    if photo is not None:
        fields.append(("photo", photo))
    for name, value in reversed(fields) if photo_first else fields:
        if name == "photo":
            # A file object: aiohttp warns about (and here refuses) large bytes bodies.
            form.add_field(name, io.BytesIO(value), filename="IMG_0001.jpg",
                           content_type="image/jpeg")
        else:
            form.add_field(name, value)
    return form


async def _csrf_of(client: TestClient[Any, Any], h: dict[str, str]) -> str:
    page = await (await client.get("/", headers=h)).text()
    return page.split('name="csrf" value="')[1].split('"')[0]


def test_a_photo_of_the_key_qr_fills_the_form_for_confirmation() -> None:
    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        h = await _pair(client)
        csrf = await _csrf_of(client, h)
        page = await (await client.get("/", headers=h)).text()
        assert 'enctype="multipart/form-data"' in page and 'capture=environment' in page
        photo = qr_photo(VPUB, size=(2000, 1500), angle=6)
        read = await client.post("/wallets/scan", data=_photo_form(csrf, photo), headers=h)
        body = await read.text()
        assert read.status == 200, body
        assert 'id="scanned"' in body and f"{VPUB}</textarea>" in body
        assert box.wallets == []  # nothing added before the person confirms
        # An address's QR: refused in words, nothing filled in.
        address = qr_photo("bitcoin:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                           size=(1200, 900))
        refused = await client.post("/wallets/scan", data=_photo_form(csrf, address), headers=h)
        assert refused.status == 422 and "That is an address" in await refused.text()
        blank = await client.post("/wallets/scan", data=_photo_form(csrf, qr_photo(
            size=(1200, 900))), headers=h)
        assert blank.status == 422 and "No QR code was found" in await blank.text()
        none = await client.post("/wallets/scan", data=_photo_form(csrf, b""), headers=h)
        assert none.status == 422 and "Take a photo" in await none.text()
        garbage = await client.post("/wallets/scan", data=_photo_form(csrf, b"\0garbage" * 99),
                                    headers=h)
        assert garbage.status == 400 and "not a photo" in await garbage.text()
        assert (box.counters.photos_read, box.counters.photos_refused) == (1, 4)
    run(test)


def test_the_photo_upload_is_guarded_and_capped() -> None:
    async def test(client: TestClient[Any, Any], box: FakeBox) -> None:
        h = await _pair(client)
        csrf = await _csrf_of(client, h)
        photo = qr_photo(VPUB, size=(800, 600))
        assert (await client.post("/wallets/scan", data=_photo_form(csrf, photo))).status == 403
        forged = await client.post("/wallets/scan", data=_photo_form("forged", photo), headers=h)
        assert forged.status == 403 and "out of date" in await forged.text()
        missing = await client.post("/wallets/scan", data=_photo_form(None, photo), headers=h)
        assert missing.status == 400
        # The CSRF field must come first: a photo is never read before it is checked.
        late = await client.post("/wallets/scan", data=_photo_form(csrf, photo, photo_first=True),
                                 headers=h)
        assert late.status == 400
        not_multipart = await client.post("/wallets/scan", data={"csrf": csrf}, headers=h)
        assert not_multipart.status == 400
        # Over 8 MB: a clear 413, whether the length is announced or not.
        big = b"\xff\xd8" + b"\0" * MAX_PHOTO_BYTES
        over = await client.post("/wallets/scan", data=_photo_form(csrf, big), headers=h)
        assert over.status == 413
        async def chunks() -> Any:
            yield b"--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n"
            yield csrf.encode() + b"\r\n--b\r\nContent-Disposition: form-data; "
            yield b'name="photo"; filename="a.jpg"\r\n\r\n'
            for _ in range(MAX_PHOTO_BYTES // 2**20 + 2):
                yield b"\0" * 2**20
            yield b"\r\n--b--\r\n"
        streamed = await client.post("/wallets/scan", data=chunks(), headers={
            **h, "Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status == 413
        # The service is still up and the form still works.
        read = await client.post("/wallets/scan", data=_photo_form(csrf, photo), headers=h)
        assert read.status == 200 and VPUB in await read.text()
    run(test)
