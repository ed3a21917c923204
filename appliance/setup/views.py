"""The setup page's HTML: phone first (360 px), no JavaScript, one inline style sheet.

Pure functions from view models to ``str``; every value from outside goes through
:func:`html.escape`. Progress refreshes itself with ``<meta http-equiv=refresh>`` on the
wallet page only, so a half-typed form on the main page is never thrown away.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import segno

__all__ = [
    "BoxView",
    "ConnectView",
    "DeviceView",
    "WalletView",
    "HomeModel",
    "ScanView",
    "forbidden_page",
    "home_page",
    "message_page",
    "redeemed_page",
    "wallet_page",
]

_STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0;padding:0 12px 24px;max-width:640px;
color:#111;background:#fafaf7}h1{font-size:22px;margin:12px 0 4px}
h2{font-size:18px;margin:22px 0 6px;border-top:1px solid #ccc;padding-top:12px}
textarea,input[type=text],input[type=date]{width:100%;box-sizing:border-box;font:inherit;
padding:8px}textarea{font-family:monospace;font-size:14px;height:6em}
button{font:inherit;padding:10px 16px;margin:6px 0}.err{background:#fdd;padding:8px}
.ok{background:#dfd;padding:8px}code,.mono{font-family:monospace;word-break:break-all}
.big{font-size:18px;background:#fff;border:1px solid #999;padding:8px;display:block}
ul{padding-left:18px}li{margin:4px 0}progress{width:100%;height:20px}
.muted{color:#555;font-size:14px}details{margin:6px 0}summary{font-weight:600}
form.inline{display:inline}input[type=file]{font:inherit;margin:6px 0;max-width:100%}
"""


def _page(title: str, body: str, *, refresh_s: int | None = None, to: str = "") -> str:
    target = f";url={to}" if to else ""
    refresh = (f'<meta http-equiv="refresh" content="{refresh_s}{target}">'
               if refresh_s else "")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="referrer" content="no-referrer">{refresh}'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(token)}">'


def _button_form(action: str, label: str, csrf: str) -> str:
    return (f'<form class="inline" method="post" action="{_e(action)}">{_csrf(csrf)}'
            f"<button>{_e(label)}</button></form>")


def forbidden_page() -> str:
    """For anyone without a session: nothing about the box, only how to pair."""
    return _page("Hearth", "<h1>Hearth</h1><p>This page is for paired devices.</p>"
                 "<p>Press the button on the box once: its screen shows a QR code. "
                 "Scan it with this phone's camera to pair.</p>")


def message_page(title: str, text: str, *, error: bool = True) -> str:
    cls = "err" if error else "ok"
    return _page("Hearth", f"<h1>{_e(title)}</h1><p class={cls}>{_e(text)}</p>"
                 '<p><a href="/">Back</a></p>')


def redeemed_page(fingerprint: str) -> str:
    # A same-site navigation from here on, so the SameSite=Strict cookie goes along.
    return _page("Hearth: paired", "<h1>Paired</h1><p class=ok>This browser is now paired "
                 "with the box.</p><p class=muted>The box's certificate fingerprint (SHA-256) "
                 f"starts with <code>{_e(fingerprint[:23])}</code>, as on its screen.</p>"
                 '<p><a href="/"><button>Continue</button></a></p>', refresh_s=2, to="/")


@dataclass(frozen=True)
class WalletView:
    id: str
    label: str
    state: str  # "backfilling", "live" ...
    percent: float | None
    eta_s: float | None
    error: str | None
    branches: int

    @property
    def ready(self) -> bool:
        return self.state == "live"


@dataclass(frozen=True)
class DeviceView:
    key: str
    label: str
    kind: str
    connected: bool
    this_browser: bool


@dataclass(frozen=True)
class ConnectView:
    server: str | None  # host:port:s
    fingerprint: str
    watchtower_url: str | None
    onion_server: str | None = None  # <onion>:port:s, for wallets away from home (Tor)


@dataclass(frozen=True)
class BoxView:
    network: str
    lines: Sequence[str]  # one per service, from the status bus
    headline: str
    noise_code: str | None
    pairing_open: bool


@dataclass(frozen=True)
class ScanView:
    """What a photo's QR code held, shown for the person to check before adding."""
    key: str
    note: str = ""


@dataclass(frozen=True)
class HomeModel:
    csrf: str
    box: BoxView
    wallets: Sequence[WalletView]
    devices: Sequence[DeviceView]
    connect: ConnectView
    form_error: str | None = None
    form_values: dict[str, str] = field(default_factory=dict)
    scanned: ScanView | None = None


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else (
        f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s")


def _state(w: WalletView) -> tuple[str, str]:
    """(CSS class, words) for where a wallet is: ready, failed, or how far back it looked."""
    if w.ready:
        return "ok", "Ready: the box knows this wallet's history."
    if w.error:
        return "err", w.error
    left = ("estimating the time left" if w.eta_s is None
            else f"about {_duration(w.eta_s)} left")
    return "", f"Looking back through the chain: {w.percent or 0.0:.0f}% ({left})"


def _wallet_line(w: WalletView, csrf: str) -> str:
    cls, words = _state(w)
    state = f"<span class={cls or 'muted'}>{_e(words)}</span>"
    name = _e(w.label or "wallet")
    return (f'<li><a href="/w/{_e(w.id)}">{name}</a> <span class=mono>{_e(w.id[:8])}</span> '
            f"{state} {_button_form(f'/wallets/{w.id}/remove', 'Remove', csrf)}</li>")


def _scan_form(csrf: str) -> str:
    # No JavaScript: the phone's own camera (or a file) through a plain multipart form.
    # The CSRF field comes first: the box checks it before reading the photo.
    return ('<form method="post" action="/wallets/scan" enctype="multipart/form-data">'
            + _csrf(csrf) +
            "<label for=photo>Scan your wallet's public key QR code (take a photo of it), "
            "or paste the key below.</label><br>"
            '<input type=file id=photo name=photo accept="image/*" capture=environment>'
            '<br><button id="scan">Read the QR code</button></form>')


def _scanned(s: ScanView) -> str:
    note = f"<br><span class=muted>{_e(s.note)}</span>" if s.note else ""
    return ('<div class=ok id="scanned"><b>Read from the photo:</b>'
            f'<code class=big>{_e(s.key)}</code>Check that it is the key your wallet shows '
            "(the first and last characters), choose when the wallet was made, then press "
            f"<i>Add wallet</i>.{note}</div>")


def _add_form(csrf: str, error: str | None, values: dict[str, str],
              scanned: ScanView | None = None) -> str:
    err = f'<p class=err id="form-error">{_e(error)}</p>' if error else ""
    if scanned:
        err += _scanned(scanned)
    when = values.get("when", "date")
    checked = {k: " checked" if when == k else "" for k in ("date", "new", "unknown")}
    return (
        "<h2>Add a wallet</h2>" + err
        + ('<p><a href="/">Scan another photo</a></p>' if scanned else _scan_form(csrf)) +
        '<form method="post" action="/wallets">' + _csrf(csrf) +
        '<label for=key>Your wallet\'s public key (xpub, ypub, zpub; tpub, upub, vpub on '
        "test networks) or output descriptor</label>"
        f'<textarea id=key name=key autocapitalize=off autocomplete=off spellcheck=false '
        f'required>{_e(values.get("key", ""))}</textarea>'
        '<p class=muted>Electrum: Wallet &gt; Information. BlueWallet: the wallet &gt; ... '
        "&gt; Export/Share XPUB. Sparrow: Settings &gt; Keystores. Never paste a seed or "
        "a private key: the box refuses them.</p>"
        '<label for=label>A name (optional)</label>'
        f'<input type=text id=label name=label maxlength=64 value="{_e(values.get("label", ""))}">'
        "<p>When was the wallet made?</p>"
        f'<label><input type=radio name=when value=date{checked["date"]}> on or after '
        f'<input type=date name=date value="{_e(values.get("date", ""))}"></label><br>'
        f'<label><input type=radio name=when value=new{checked["new"]}> just now (a new '
        "wallet: nothing to look back for)</label><br>"
        f'<label><input type=radio name=when value=unknown{checked["unknown"]}> I don\'t know '
        "(slowest: scans back to when such wallets became possible)</label><br>"
        '<button id="add">Add wallet</button></form>')


def _instructions(server: str) -> str:
    host, port, _ = server.rsplit(":", 2)
    items = [
        ("Electrum", f"Network (the dot at the bottom right; on Android the network icon) "
         f"&gt; Server: untick <i>Select server automatically</i>, enter "
         f"<code>{_e(server)}</code>. Or start it with <code>electrum --oneserver --server "
         f"{_e(server)}</code>."),
        ("BlueWallet", f"Settings &gt; Network &gt; Electrum Server: host <code>{_e(host)}"
         f"</code>, SSL port <code>{_e(port)}</code>, Save."),
        ("Sparrow", f"Settings &gt; Server &gt; Private Electrum: URL <code>{_e(host)}</code>"
         f", port <code>{_e(port)}</code>, Use SSL on, Test Connection."),
        ("Nunchuk", f"Profile &gt; Network settings &gt; Mainnet server: "
         f"<code>ssl://{_e(host)}:{_e(port)}</code>, Save network settings."),
    ]
    return "".join(f"<details><summary>{name}</summary><p>{text}</p></details>"
                   for name, text in items)


def _connect(c: ConnectView) -> str:
    if c.server is None:
        return "<h2>Connect your wallet</h2><p>The Electrum server is not up yet.</p>"
    qr = segno.make(c.server, error="M").svg_inline(scale=4)
    tower = ""
    if c.watchtower_url:
        tower = ("<p>Lightning in Electrum: Preferences &gt; Lightning &gt; <i>Use a remote "
                 f"watchtower</i>, URL:</p><code class=big>{_e(c.watchtower_url)}</code>")
    return ("<h2>Connect your wallet</h2><p>Electrum server for this box:</p>"
            f'<code class=big id="server">{_e(c.server)}</code>'
            f'<div aria-label="QR code of the server">{qr}</div>'
            "<p class=muted>The wallet asks once to trust the box's own certificate: its "
            f"SHA-256 fingerprint starts with <code>{_e(c.fingerprint[:23])}</code>.</p>"
            + _instructions(c.server) + _away(c.onion_server) + tower)


def _away(onion_server: str | None) -> str:
    if onion_server is None:
        return ""
    return ("<p>Away from home, through Tor (a wallet with Tor built in, or Orbot on the "
            "phone), the same server is:</p>"
            f'<code class=big id="onion">{_e(onion_server)}</code>')


def _devices(devices: Iterable[DeviceView], csrf: str) -> str:
    rows = []
    for d in devices:
        what = "this browser" if d.this_browser else (
            "browser" if d.kind == "web" else "computer/app (Noise)")
        online = " connected" if d.connected else ""
        rows.append(f"<li>{_e(d.label or what)} <span class=muted>({_e(what)}{online}, "
                    f"<span class=mono>{_e(d.key[:12])}</span>)</span> "
                    f"{_button_form(f'/devices/{d.key}/revoke', 'Revoke', csrf)}</li>")
    return "<h2>Paired devices</h2><ul>" + "".join(rows) + "</ul>"


def _box(b: BoxView, csrf: str) -> str:
    lines = "".join(f"<li>{_e(line)}</li>" for line in b.lines)
    if b.noise_code:
        code = ("<p>Pairing is open. A computer pairs with <code>appliance-client pair "
                f"'{_e(b.noise_code)}'</code> (or the QR on the box's screen for a phone)."
                "</p>")
    else:
        code = ("<p class=muted>To pair another phone or a computer (appliance-client), "
                "open pairing: the box shows a new QR code and this page its code.</p>"
                + _button_form("/pairing/open", "Open pairing for 5 minutes", csrf))
    return (f"<h2>The box</h2><p id=headline>{_e(b.headline)}</p><ul>{lines}</ul>"
            f"<h3>Another device</h3>{code}")


def home_page(m: HomeModel) -> str:
    wallets = "".join(_wallet_line(w, m.csrf) for w in m.wallets) or "<li>none yet</li>"
    body = (f"<h1>Hearth</h1><p class=muted>Your box on {_e(m.box.network)}.</p>"
            + _add_form(m.csrf, m.form_error, m.form_values, m.scanned)
            + f"<h2>Wallets</h2><ul id=wallets>{wallets}</ul>"
            + _connect(m.connect) + _box(m.box, m.csrf) + _devices(m.devices, m.csrf))
    return _page("Hearth", body)


def wallet_page(w: WalletView, connect: ConnectView) -> str:
    """One wallet coming in: refreshes every 3 s until ready, then says how to connect."""
    cls, words = _state(w)
    status = f'<p class="{cls}" id=status>{_e(words)}</p>'
    if not (w.ready or w.error):
        status += (f'<progress max=100 value="{w.percent or 0.0:.1f}"></progress>'
                   "<p class=muted>This page updates itself.</p>")
    body = (f"<h1>{_e(w.label or 'Wallet')}</h1><p class=mono>{_e(w.id)}</p>{status}"
            + (_connect(connect) if w.ready else "") + '<p><a href="/">All settings</a></p>')
    return _page("Hearth: wallet", body, refresh_s=None if w.ready or w.error else 3)
