"""The setup page's HTTP layer (aiohttp): thin routes over a :class:`BoxAPI`.

Only ``GET /P/<TOKEN>`` (redeeming the OLED's pairing link) answers without a session;
everything else needs the session cookie of a paired browser, and every POST its CSRF
token. Bodies are small forms: anything over 16 KiB is refused with 413 before it is
read, a form without its fields gets 400. The one exception is the photo of a wallet's QR
code (``POST /wallets/scan``, multipart): its CSRF field must come first and is checked
before the photo is read, the photo is capped at 8 MB (413), and photos are decoded one at
a time in a limited child process. Errors the box gives (a wrong key, a closed window) are shown in
words, never as a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import BodyPartReader, MultipartReader, web

from ..control import ControlError
from ..control.messages import PairedClientInfo, WalletAdded, WalletSummary
from ..pairing.window import decode_web_token
from . import views
from .scan import MAX_PHOTO_BYTES, DecoderFailed, PhotoError, read_qr_codes_isolated
from .sessions import COOKIE_NAME, RedeemLimiter, Session, cookie_header, new_session, parse_cookie
from .walletqr import ScanRefused, wallet_from_qr_texts

__all__ = ["MAX_BODY", "BoxAPI", "Counters", "make_app", "human_wallet_error"]

log = logging.getLogger("setup")

MAX_BODY = 16 * 1024
_SESSION = web.RequestKey("session", Session)
_FORM = web.RequestKey("form", dict[str, str])
_UPLOAD = web.RequestKey("upload", MultipartReader)
SCAN_PATH = "/wallets/scan"
_SECURITY_HEADERS = {
    # No script at all, styles only inline, images only the inline QR; not framable.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src data:; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BoxAPI(Protocol):
    """What the page asks of the box (the indexer's and tower's control sockets, bitcoind,
    the status bus). Every method raises :class:`ControlError` with a message to show."""

    network: str
    fingerprint: str
    onion: str | None  # the box's .onion address when tor is on

    def is_paired(self, session: Session) -> bool: ...
    async def redeem(self, token: bytes, session: Session, label: str) -> None: ...
    async def wallet_add(self, items: list[str], birthday: int | None,
                         label: str) -> WalletAdded: ...
    async def wallet_list(self) -> list[WalletSummary]: ...
    async def wallet_remove(self, wallet_id: str) -> None: ...
    async def devices(self) -> list[PairedClientInfo]: ...
    async def revoke(self, key: str) -> None: ...
    async def pairing_open(self) -> None: ...
    async def noise_code(self) -> str | None: ...
    async def tls_port(self) -> int | None: ...
    async def watchtower_url(self) -> str | None: ...
    async def birthday_for(self, day: dt.date | None) -> int: ...
    def status_lines(self) -> tuple[str, list[str]]: ...


@dataclass
class Counters:
    redeemed: int = 0
    redeem_failed: int = 0
    redeem_limited: int = 0
    csrf_refused: int = 0
    no_session: int = 0
    bad_requests: int = 0
    photos_read: int = 0  # a wallet key found and shown for confirmation
    photos_refused: int = 0  # not a photo, no QR, or nothing to add in it
    photo_decoder_failed: int = 0  # the decoding child crashed or was killed

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_HUMAN = [
    ("unknown extended key version", "This is not a wallet key Hearth knows. Paste an xpub, "
     "ypub or zpub (tpub, upub or vpub on test networks), or an output descriptor."),
    ("invalid descriptor", "This is neither a wallet key (xpub, ypub, zpub ...) nor an "
     "output descriptor Hearth understands. Check that it was copied whole."),
    ("bad base58 checksum", "This key is damaged (its checksum does not match): copy it "
     "again from the wallet, whole."),
    ("wrong length", "This key is too short or too long: copy it again from the wallet, whole."),
    ("private key", "That is a private key: never paste one anywhere. The box only needs "
     "the public key (xpub, zpub ...) and refused this one; nothing was stored."),
    ("but the box runs", "This key is for another network than the box's"),
]


def human_wallet_error(message: str) -> str:
    """``appliance wallet add``'s error, said for a person (the original kept at the end)."""
    for needle, text in _HUMAN:
        if needle in message:
            if needle == "but the box runs":
                return f"{text} ({message})."
            return text
    return message


def _html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        charset="utf-8", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(box: BoxAPI, limiter: RedeemLimiter, counters: Counters,
             on_change: Callable[[], None] = lambda: None) -> web.Application:
    def count(name: str) -> None:
        setattr(counters, name, getattr(counters, name) + 1)
        on_change()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await _guarded(request, handler)
        except web.HTTPException as exc:  # 404, 405, 413 ...: plain text, same headers
            if exc.status >= 400:
                count("bad_requests")
            exc.headers.update(_SECURITY_HEADERS)
            raise
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/P/"):
            return await handler(request)
        session = parse_cookie(request.cookies.get(COOKIE_NAME))
        if session is None or not box.is_paired(session):
            count("no_session")
            return _html(views.forbidden_page(), 403)
        request[_SESSION] = session
        if request.method == "POST":
            if request.path == SCAN_PATH:
                form, request[_UPLOAD] = await _upload_csrf(request)
            else:
                form = await _form(request)
            if not session.csrf_ok(form.get("csrf", "")):
                count("csrf_refused")
                return _html(views.message_page("Refused", "This form is out of date or did "
                                                "not come from this page. Reload and try "
                                                "again."), 403)
            request[_FORM] = form
        return await handler(request)

    async def redeem(request: web.Request) -> web.StreamResponse:
        if limiter.blocked():
            count("redeem_limited")
            return _html(views.message_page("Wait a minute", "Too many wrong pairing links "
                                            "were tried. Wait a minute, press the box's "
                                            "button and scan again."), 429,
                         {"Retry-After": "60"})
        token = decode_web_token(request.match_info["token"])
        session = new_session()
        label = _browser_label(request.headers.get("User-Agent", ""))
        try:
            if token is None:
                raise ControlError("not a pairing link")
            await box.redeem(token, session, label)
        except ControlError:
            limiter.failed()
            count("redeem_failed")
            log.info("refused a pairing link")  # never the token
            return _html(views.message_page(
                "Link used or expired", "This pairing link was already used, or its "
                "5 minutes are over. Press the button on the box once and scan the new "
                "QR code."), 403)
        count("redeemed")
        log.info("paired a browser (%s)", label)
        return _html(views.redeemed_page(box.fingerprint),
                     headers={"Set-Cookie": cookie_header(session)})

    async def home(request: web.Request, error: str | None = None,
                   values: dict[str, str] | None = None, status: int = 200,
                   scanned: views.ScanView | None = None) -> web.Response:
        session = request[_SESSION]
        model = views.HomeModel(
            csrf=session.csrf, box=await _box_view(), wallets=await _wallets(),
            devices=await _devices(session), connect=await _connect(request),
            form_error=error, form_values=values or {}, scanned=scanned)
        return _html(views.home_page(model), status)

    async def _box_view() -> views.BoxView:
        headline, lines = box.status_lines()
        code = await _quiet(box.noise_code(), None)
        return views.BoxView(box.network, lines, headline, code, code is not None)

    async def _wallets() -> list[views.WalletView]:
        return [_wallet_view(w) for w in await _quiet(box.wallet_list(), [])]

    async def _devices(session: Session) -> list[views.DeviceView]:
        mine = session.key_hash.hex()
        return [views.DeviceView(d.key, d.label, d.kind, bool(d.connected), d.key == mine)
                for d in await _quiet(box.devices(), [])]

    async def _connect(request: web.Request) -> views.ConnectView:
        port = await _quiet(box.tls_port(), None)
        # The host this browser reached the box at is one the wallet on it can reach too.
        host = request.url.host or "hearth.local"
        server = f"{host}:{port}:s" if port else None
        return views.ConnectView(server, box.fingerprint,
                                 await _quiet(box.watchtower_url(), None),
                                 f"{box.onion}:{port}:s" if box.onion and port else None)

    async def add_wallet(request: web.Request) -> web.StreamResponse:
        form = request[_FORM]
        values = {k: form.get(k, "") for k in ("key", "label", "when", "date")}
        items = form.get("key", "").split()
        try:
            if not items:
                raise ControlError("Paste your wallet's public key (xpub, zpub ...) first.")
            birthday = await _birthday(values["when"], values["date"])
            result = await box.wallet_add(items, birthday, values["label"].strip())
        except ControlError as exc:
            if "private" in str(exc):
                values["key"] = ""  # never send a secret back into the page
            return await home(request, human_wallet_error(str(exc)), values, 400)
        raise web.HTTPSeeOther(f"/w/{result.wallet.id}")

    decoding = asyncio.Semaphore(1)  # one photo in memory and on the CPU at a time

    async def scan_wallet(request: web.Request) -> web.StreamResponse:
        """The photo of a wallet's QR code -> the add form filled in, for the person to
        check and confirm (nothing is added before they press "Add wallet")."""
        photo = await _upload_photo(request[_UPLOAD])
        try:
            if not photo:
                raise ScanRefused("Take a photo of the wallet's QR code first (the "
                                  "\"photo\" button), then press \"Read the QR code\".")
            async with decoding:
                texts = await read_qr_codes_isolated(photo)
            found = wallet_from_qr_texts(texts)
        except DecoderFailed as exc:
            count("photo_decoder_failed")
            return await home(request, str(exc), status=422)
        except PhotoError as exc:
            count("photos_refused")
            return await home(request, str(exc), status=400)
        except ScanRefused as exc:
            count("photos_refused")
            return await home(request, str(exc), status=422)
        count("photos_read")
        values = {"key": found.key, "label": found.label[:64], "when": "date"}
        return await home(request, values=values, scanned=views.ScanView(found.key, found.note))

    async def _birthday(when: str, date: str) -> int | None:
        if when == "unknown":
            return None
        if when == "new":
            return await box.birthday_for(None)
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise ControlError("Pick the date the wallet was made, or choose \"just now\" "
                               "or \"I don't know\".") from None
        return await box.birthday_for(day)

    async def wallet(request: web.Request) -> web.Response:
        wid = request.match_info["id"]
        found = [w for w in await _quiet(box.wallet_list(), []) if w.id == wid]
        if not found:
            return _html(views.message_page("No such wallet", "The box has no wallet with "
                                            "this id (removed?)."), 404)
        return _html(views.wallet_page(_wallet_view(found[0]), await _connect(request)))

    async def remove_wallet(request: web.Request) -> web.StreamResponse:
        try:
            await box.wallet_remove(request.match_info["id"])
        except ControlError as exc:
            return _html(views.message_page("Not removed", str(exc)), 400)
        raise web.HTTPSeeOther("/")

    async def revoke(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        try:
            await box.revoke(key)
        except ControlError as exc:
            return _html(views.message_page("Not revoked", str(exc)), 400)
        session = request[_SESSION]
        if key == session.key_hash.hex():
            return _html(views.message_page("Unpaired", "This browser is no longer paired.",
                                            error=False))
        raise web.HTTPSeeOther("/")

    async def open_pairing(request: web.Request) -> web.StreamResponse:
        try:
            await box.pairing_open()
        except ControlError as exc:
            return _html(views.message_page("Pairing not opened", str(exc)), 400)
        raise web.HTTPSeeOther("/")

    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard])
    # No HEAD: a link preview probing the URL must not use the token up.
    app.router.add_get("/P/{token}", redeem, allow_head=False)
    app.router.add_get("/", home)
    app.router.add_post("/wallets", add_wallet)
    app.router.add_post(SCAN_PATH, scan_wallet)
    app.router.add_get("/w/{id}", wallet)
    app.router.add_post("/wallets/{id}/remove", remove_wallet)
    app.router.add_post("/devices/{key}/revoke", revoke)
    app.router.add_post("/pairing/open", open_pairing)
    return app


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise web.HTTPBadRequest(text="expected a form (application/x-www-form-urlencoded)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                            actual_size=request.content_length)
    try:
        data = await request.post()
    except ValueError:
        raise web.HTTPBadRequest(text="malformed form") from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def _upload_csrf(request: web.Request) -> tuple[dict[str, str], MultipartReader]:
    """The photo form's first part, its CSRF token; the photo is read only once it passed."""
    if request.content_length is not None and request.content_length > MAX_PHOTO_BYTES + MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_PHOTO_BYTES + MAX_BODY,
                                            actual_size=request.content_length)
    try:
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "csrf":
            raise web.HTTPBadRequest(text="expected the photo form (csrf first, then photo)")
        csrf = (await _read_capped(part, 256)).decode("ascii", errors="replace")
    except (ValueError, AssertionError, KeyError):  # not multipart, or broken
        raise web.HTTPBadRequest(text="expected the photo form (multipart/form-data)") from None
    return {"csrf": csrf}, reader


async def _upload_photo(reader: MultipartReader) -> bytes:
    """The ``photo`` part's bytes (empty if no file was chosen); 413 past 8 MB."""
    try:
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "photo":
            raise web.HTTPBadRequest(text="expected the photo form (csrf first, then photo)")
        return await _read_capped(part, MAX_PHOTO_BYTES)
    except (ValueError, AssertionError, KeyError):
        raise web.HTTPBadRequest(text="malformed photo upload") from None


async def _read_capped(part: BodyPartReader, cap: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > cap:
            raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=len(data))
    return bytes(data)


async def _quiet(call: Awaitable[Any], default: Any) -> Any:
    """A part of the page the box cannot fill right now shows its default, not a 500."""
    try:
        return await call
    except ControlError as exc:
        log.info("page part unavailable: %s", exc)
        return default


def _wallet_view(w: WalletSummary) -> views.WalletView:
    backfill = w.backfill
    return views.WalletView(w.id, w.label, w.state,
                            backfill.percent if backfill is not None else None,
                            backfill.eta_s if backfill is not None else None, w.error,
                            len(w.branches))


def _browser_label(agent: str) -> str:
    """A short name for the device list: the platform in the User-Agent, if any."""
    for name in ("Android", "iPhone", "iPad", "Windows", "Macintosh", "Linux"):
        if name in agent:
            return f"browser on {name}"
    return "browser"
