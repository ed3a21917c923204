"""What the OLED shows: small view models in, one 1-bit frame out (128x64 or 128x128).

Rendering is pure: no I/O, no clock, no device. The caller passes the data's ``age``
(seconds since the snapshot behind the page was taken), so a frame is a function of its
arguments, tests can check it pixel by pixel and ``appliance.devices.oled.present`` can
push the same image to a real panel or to luma's dummy device.

Frames are mode ``"1"`` images: 1 is a lit pixel. Text uses Pillow's built-in bitmap
font (6 px advance, 10 rows) and luma's ``TINY_FONT`` (4 px advance, 5 rows) for the few
places where 6 px is too wide; both ship with the packages, nothing is downloaded, and
bitmap fonts stay crisp on a 1-bit panel where an anti-aliased font would smear.
Text that does not fit is cut and ends in an ellipsis; recovery words are the exception
and raise instead, because a cut word would be a wrong backup.

Every page with a title shows the data's age at the top right ("12s") and, once the
age reaches ``stale_after``, an inverted ``STALE 5m`` badge instead: a frame whose
source went quiet must never look current.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeAlias

import segno
from luma.core.legacy import text as luma_legacy_text
from luma.core.legacy.font import TINY_FONT
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "ALNUM_CAPACITY_L",
    "DEFAULT_STALE_AFTER",
    "MAX_QR_VERSION",
    "MIN_QR_SCALE",
    "PANEL_128X128",
    "PANEL_128X64",
    "BootPage",
    "CountdownOverlay",
    "ErrorPage",
    "IndexPage",
    "Page",
    "PairingPage",
    "Panel",
    "QRLayout",
    "QRPayloadError",
    "RecoveryWordsPage",
    "SyncPage",
    "UpdatePage",
    "UsbBackupPage",
    "UsbBackupState",
    "WatchtowerPage",
    "fit_text",
    "make_pairing_qr",
    "pairing_layout",
    "qr_layout",
    "render",
    "render_with_margin",
    "words_per_page",
]

#: Seconds after which a page's data is shown as STALE: three missed 5 s heartbeats, the
#: same rule as the status bus (a caller with the bus's own verdict passes ``stale=``).
DEFAULT_STALE_AFTER = 15.0

#: The largest QR version the pairing page accepts: version 3 (29 modules) is the
#: largest that fits 64 px rows at 2 px per module with a quiet zone, and one payload
#: must work on every supported panel.
MAX_QR_VERSION = 3
#: Fewer than 2 px per module is not reliably scanned off a small OLED by a phone.
MIN_QR_SCALE = 2
#: Alphanumeric characters a QR code holds at error correction level L, by version.
ALNUM_CAPACITY_L = {1: 25, 2: 47, 3: 77}
_QR_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")

# Pillow's built-in bitmap font: every ASCII glyph fits a 6x10 cell whose ink starts on
# the font's row 1, so a line is drawn 1 px higher than its top.
_ADV = 6
_ROWS = 10
_TOP = 1
_BASELINE = 7  # row of "." inside the 10-row cell, for the drawn ellipsis
# luma's TINY_FONT: 3x5 glyphs on a 4 px advance, ink on the font's rows 1..5.
_TINY_ADV = 4
_TINY_ROWS = 5
_TINY_TOP = 1
_LINE = 10  # line pitch: rows touch only where a descender meets a "$"


class QRPayloadError(ValueError):
    """The pairing payload cannot be shown as a QR code on the panel."""


@dataclass(frozen=True)
class Panel:
    """The drawable size after rotation; the layouts know 128x64 and 128x128."""

    width: int = 128
    height: int = 64

    def __post_init__(self) -> None:
        if (self.width, self.height) not in ((128, 64), (128, 128)):
            raise ValueError(f"no page layout for a {self.width}x{self.height} panel "
                             "(supported: 128x64, 128x128)")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def tall(self) -> bool:
        return self.height >= 128


PANEL_128X64 = Panel(128, 64)
PANEL_128X128 = Panel(128, 128)


# --------------------------------------------------------------------------- view models

@dataclass(frozen=True)
class BootPage:
    """The box is starting; ``step`` names what it waits for ("bitcoind", "indexer")."""

    step: str = ""
    detail: str = ""
    version: str = ""
    elapsed: float | None = None  # seconds since boot: a counter that moves proves liveness


@dataclass(frozen=True)
class SyncPage:
    """bitcoind's initial block download (from ``getblockchaininfo``)."""

    blocks: int
    headers: int
    progress: float  # verificationprogress, 0..1
    peers: int
    disk_free: int | None = None  # bytes
    eta_seconds: float | None = None
    synced: bool = False
    note: str = ""


@dataclass(frozen=True)
class IndexPage:
    """The wallet index catching up, or a late wallet's backfill over block filters."""

    wallet: str
    done: int  # blocks scanned so far
    total: int  # blocks to scan
    height: int | None = None  # block being scanned
    phase: str = "Indexing"
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class PairingPage:
    """A QR code for the phone wallet; ``payload`` must be QR-alphanumeric."""

    payload: str
    caption: str = "Scan to pair"
    #: any text (byte mode), e.g. a stock wallet's "host:port:s" server string; the Hearth
    #: pairing code itself is always alphanumeric
    text_mode: bool = False


@dataclass(frozen=True)
class RecoveryWordsPage:
    """One screen of the backup recovery code: ``words[i]`` is word number ``first + i``."""

    words: tuple[str, ...]
    first: int  # 1-based number of words[0]
    total: int
    hint: str = "Press: next"


class UsbBackupState(Enum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class UsbBackupPage:
    state: UsbBackupState
    target: str = ""  # the stick's label
    progress: float | None = None  # 0..1 while RUNNING, if known
    reason: str = ""  # why it FAILED
    headline: str = "Backup OK"  # OK: the big words ("Restored" after a first-boot restore)
    note: str = ""  # OK: the line under them, instead of "on <target>"


@dataclass(frozen=True)
class UpdatePage:
    """An update from a stick: the question, its progress, or why nothing changed."""

    headline: str  # "Update 0.1.0 -> 0.1.1?", "Installing 0.1.1", "Update refused" ...
    detail: str = ""  # "Press to install", rauc's step, the reason
    percent: int = -1  # 0..100 while installing
    hint: str = ""  # the bottom line: what a press (or not) does
    alert: bool = False  # refused, failed, rolled back: an inverted title


@dataclass(frozen=True)
class WatchtowerPage:
    """The tower acted: e.g. a revoked state was broadcast and its penalty confirmed."""

    headline: str = "Breach stopped"
    channel: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ErrorPage:
    """Something needs the owner: an inverted title bar and the reason in words."""

    title: str
    detail: str = ""

    @classmethod
    def service_fatal(cls, service: str, reason: str = "") -> ErrorPage:
        return cls(f"{service} FATAL", reason or "Stopped after repeated crashes. Restart the box.")

    @classmethod
    def disk_nearly_full(cls, free_bytes: int, total_bytes: int | None = None) -> ErrorPage:
        used = ""
        if total_bytes:
            used = f", {100 * (total_bytes - free_bytes) // total_bytes}% used"
        return cls("Disk nearly full", f"{_bytes(free_bytes)} free{used}. Sync stops when it is full.")

    @classmethod
    def unknown_wallet(cls) -> ErrorPage:
        # A wallet queried scripts the box does not watch: lead the owner to the setup page.
        return cls("Unknown wallet", "Press the button to add it, then scan the QR.")

    @classmethod
    def disk_full(cls, services: Sequence[str]) -> ErrorPage:
        """A write was refused for a full disk: nothing new is stored (tower, backups)."""
        return cls("Disk full", f"{' and '.join(services)} cannot store anything new. "
                                "Free space on the box.")

    @classmethod
    def data_too_new(cls, service: str, what: str) -> ErrorPage:
        """A store written by a newer Hearth (after a rollback): refused, left untouched."""
        return cls("Newer Hearth data", f"Data from a newer Hearth ({what}): {service} "
                                        "waits. Update again.")

    @classmethod
    def under_voltage(cls) -> ErrorPage:
        return cls("Under-voltage", "Power supply too weak: use the official Pi supply and cable.")


@dataclass(frozen=True)
class CountdownOverlay:
    """Drawn over any page while the button is held: "Hold to reset pairing: 3"."""

    seconds_left: int
    action: str = "reset pairing"


Page: TypeAlias = (BootPage | SyncPage | IndexPage | PairingPage | RecoveryWordsPage | UsbBackupPage
                   | UpdatePage | WatchtowerPage | ErrorPage)


# --------------------------------------------------------------------------- public helpers

def fit_text(text: str, max_width: int, *, scale: int = 1) -> tuple[str, bool]:
    """The longest prefix of ``text`` that fits ``max_width`` px in the 6 px font.

    Returns ``(shown, cut)``; when ``cut`` the caller draws a one-cell ellipsis after
    ``shown``, which is already accounted for in the width. Non-ASCII characters become
    ``?`` (the bitmap font's accented glyphs reach above the line).
    """
    text = _ascii(text)
    unit = _ADV * scale
    if len(text) * unit <= max_width:
        return text, False
    room = max_width // unit - 1  # cells left after the ellipsis
    if room < 0:
        return "", False
    return text[:room].rstrip(), True


def words_per_page(panel: Panel) -> int:
    """Recovery words one screen shows: the rows between the title and the hint."""
    return 8 if panel.tall else 4


def make_pairing_qr(payload: str, *, max_version: int = MAX_QR_VERSION,
                    text_mode: bool = False) -> segno.QRCode:
    """The pairing QR code (alphanumeric mode, level L or better), or a clear error.

    ``text_mode`` allows any text in byte mode (a stock wallet's server string)."""
    if not payload:
        raise QRPayloadError("the pairing payload is empty")
    if text_mode:
        qr = segno.make_qr(payload, error="L", mode="byte", boost_error=True)
        if int(qr.version) > max_version:
            raise QRPayloadError(f"{len(payload)} bytes need QR version {qr.version}; "
                                 f"the panel shows version {max_version} at most")
        return qr
    bad = sorted(set(payload) - _QR_ALNUM)
    if bad:
        raise QRPayloadError(
            f"the pairing payload must use QR alphanumeric characters only (0-9, A-Z, space, $%*+-./:); "
            f"it has {''.join(bad)!r}")
    # Level L first so the most data fits; boost_error raises the level while the
    # version stays the same, which costs nothing on screen.
    qr = segno.make_qr(payload, error="L", mode="alphanumeric", boost_error=True)
    version = int(qr.version)
    if version > max_version:
        raise QRPayloadError(
            f"the pairing payload has {len(payload)} characters and needs QR version {version}; "
            f"the 128x64 panel shows version {max_version} at most "
            f"({ALNUM_CAPACITY_L.get(max_version, '?')} alphanumeric characters)")
    return qr


@dataclass(frozen=True)
class QRLayout:
    """Where a QR code of ``modules`` x ``modules`` goes: top-left corner and px per module."""

    scale: int
    x: int
    y: int
    modules: int

    @property
    def size(self) -> int:
        return self.modules * self.scale

    @property
    def quiet_modules(self) -> float:
        """The narrowest lit margin around the symbol, in modules."""
        return min(self.x, self.y) / self.scale


def qr_layout(panel: Panel, modules: int, *, scale: int | None = None) -> QRLayout:
    """Centre the symbol at the largest integer scale that leaves >= 1 module of quiet zone."""
    side = min(panel.width, panel.height)
    best = side // (modules + 2)
    if scale is None:
        scale = best
    if scale < MIN_QR_SCALE or scale > best:
        raise QRPayloadError(f"a {modules}-module QR code does not fit a {panel.width}x{panel.height} "
                             f"panel at {MIN_QR_SCALE} px per module with a quiet zone")
    size = modules * scale
    return QRLayout(scale, (panel.width - size) // 2, (panel.height - size) // 2, modules)


# --------------------------------------------------------------------------- rendering

def render(page: Page, panel: Panel = PANEL_128X64, *, age: float | None = None,
           stale_after: float = DEFAULT_STALE_AFTER, stale: bool | None = None,
           overlay: CountdownOverlay | None = None) -> Image.Image:
    """One frame of ``page`` (mode "1", ``panel.size``), with the age/STALE marker and overlay.

    ``age`` is the seconds since the page's data was current (None: no age shown, e.g.
    recovery words). The page is STALE when ``age >= stale_after``, or as ``stale`` says
    when given (e.g. the status bus's own verdict); a stale page without an age still
    gets the marker.
    """
    return render_with_margin(page, panel, 0, age=age, stale_after=stale_after, stale=stale,
                              overlay=overlay)


def render_with_margin(page: Page, panel: Panel, margin: int, *, age: float | None = None,
                       stale_after: float = DEFAULT_STALE_AFTER, stale: bool | None = None,
                       overlay: CountdownOverlay | None = None) -> Image.Image:
    """Like :func:`render`, on a canvas ``margin`` px larger on every side.

    The panel sits at (margin, margin). Any lit pixel in the margin is a layout bug
    (something drawn past the panel's edge, which a real panel would silently clip);
    the tests look for exactly that.
    """
    s = _Surface(panel, margin)
    if stale is None:
        stale = age is not None and age >= stale_after
    layout = _LAYOUTS.get(type(page))
    if layout is None:  # pragma: no cover - the Page union is closed
        raise TypeError(f"no layout for {type(page).__name__}")
    layout(s, page, age, stale)
    if overlay is not None:
        _countdown(s, overlay)
    return s.image


class _Surface:
    """Drawing in panel coordinates onto an image that may have a margin around the panel."""

    def __init__(self, panel: Panel, margin: int) -> None:
        self.panel = panel
        self.w = panel.width
        self.h = panel.height
        self.m = margin
        self.image = Image.new("1", (panel.width + 2 * margin, panel.height + 2 * margin), 0)
        self.draw = ImageDraw.Draw(self.image)
        # Loading the embedded font costs ~0.1 ms; doing it per frame keeps this module
        # free of module-level state.
        self.font = ImageFont.load_default_imagefont()

    def rect(self, x0: int, y0: int, x1: int, y1: int, *, fill: int | None = None,
             outline: int | None = None) -> None:
        """An inclusive rectangle."""
        m = self.m
        self.draw.rectangle((x0 + m, y0 + m, x1 + m, y1 + m), fill=fill, outline=outline)

    def text(self, x: int, y: int, text: str, *, scale: int = 1, fill: int = 1,
             max_width: int | None = None, ellipsis: bool = False) -> int:
        """One line whose ink starts at row ``y``, cut to ``max_width`` (default: to the
        right edge); ``ellipsis`` ends it in one even if it fits. Returns the width used."""
        shown, cut, width = _fit(text, self.w - x if max_width is None else max_width, scale, ellipsis)
        self._draw(x, y, shown, cut, scale, fill)
        return width

    def text_right(self, right: int, y: int, text: str, *, scale: int = 1, fill: int = 1) -> int:
        """Right-aligned so the last cell ends at column ``right`` (inclusive)."""
        shown, cut, width = _fit(text, right + 1, scale)
        self._draw(right + 1 - width, y, shown, cut, scale, fill)
        return width

    def text_center(self, y: int, text: str, *, scale: int = 1, fill: int = 1, x0: int = 0,
                    x1: int | None = None) -> int:
        """Centred between columns ``x0`` and ``x1`` (inclusive; default the whole line)."""
        x1 = self.w - 1 if x1 is None else x1
        span = x1 - x0 + 1
        shown, cut, width = _fit(text, span, scale)
        self._draw(x0 + (span - width) // 2, y, shown, cut, scale, fill)
        return width

    def _draw(self, x: int, y: int, shown: str, cut: bool, scale: int, fill: int) -> None:
        cells = len(shown) + (1 if cut else 0)
        if cells == 0:
            return
        glyphs = Image.new("1", (cells * _ADV, _ROWS), 0)
        ImageDraw.Draw(glyphs).text((0, -_TOP), shown, font=self.font, fill=1)
        if cut:
            for dx in (0, 2, 4):
                glyphs.putpixel((len(shown) * _ADV + dx, _BASELINE), 1)
        if scale > 1:
            # Nearest-neighbour keeps big digits as crisp blocks of the same bitmap font.
            glyphs = glyphs.resize((glyphs.width * scale, glyphs.height * scale), Image.Resampling.NEAREST)
        self.image.paste(fill, (x + self.m, y + self.m), mask=glyphs)

    def tiny(self, x: int, y: int, text: str, *, fill: int = 1, max_width: int | None = None) -> int:
        """luma's 3x5 font, for markers in spaces too narrow for the 6 px font."""
        if max_width is None:
            max_width = self.w - x
        text = _ascii(text)[: max(0, max_width // _TINY_ADV)]
        luma_legacy_text(self.draw, (x + self.m, y + self.m - _TINY_TOP), text, fill=fill, font=TINY_FONT)
        return len(text) * _TINY_ADV

    def bar(self, x: int, y: int, width: int, height: int, fraction: float) -> None:
        """Outline plus a fill proportional to ``fraction``, with a 1 px gap inside."""
        fraction = min(1.0, max(0.0, fraction))
        self.rect(x, y, x + width - 1, y + height - 1, outline=1)
        inner = width - 4
        filled = round(inner * fraction)
        if filled > 0:
            self.rect(x + 2, y + 2, x + 1 + filled, y + height - 3, fill=1)

    def wrap(self, text: str, max_width: int, *, scale: int = 1) -> list[str]:
        """Greedy word wrap; a word longer than a line is split."""
        per_line = max(1, max_width // (_ADV * scale))
        lines: list[str] = []
        current = ""
        for word in _ascii(text).split():
            while len(word) > per_line:
                if current:
                    lines.append(current)
                    current = ""
                lines.append(word[:per_line])
                word = word[per_line:]
            candidate = f"{current} {word}" if current else word
            if len(candidate) <= per_line:
                current = candidate
            else:
                lines.append(current)
                current = word
        if current:
            lines.append(current)
        return lines

    def paragraph(self, y: int, text: str, bottom: int, *, scale: int = 1, fill: int = 1) -> int:
        """Wrapped lines from row ``y`` while they fit above ``bottom``; the last shown line
        ends in an ellipsis if text was left over. Returns the next free row."""
        pitch = _LINE * scale
        rows = max(0, (bottom - y + 1) // pitch)
        lines = self.wrap(text, self.w, scale=scale)
        if not rows:
            return y
        for i, line in enumerate(lines[:rows]):
            self.text(0, y, line, scale=scale, fill=fill, ellipsis=i == rows - 1 and len(lines) > rows)
            y += pitch
        return y

    def title_bar(self, title: str, age: float | None, stale: bool, *, inverted: bool = False) -> int:
        """The top line: title left, age or STALE badge right. Returns the first body row."""
        fg = 0 if inverted else 1
        if inverted:
            self.rect(0, 0, self.w - 1, _ROWS - 1, fill=1)
        right = self.w
        if stale:
            # An inverted badge: it has to catch the eye on an otherwise calm page.
            label = "STALE" if age is None else f"STALE {_age(age)}"
            width = len(label) * _ADV
            self.rect(self.w - width - 2, 0, self.w - 1, _ROWS - 1, fill=fg)
            self.text(self.w - width - 1, 0, label, fill=1 - fg, max_width=width)
            right = self.w - width - 2
        elif age is not None:
            label = _age(age)
            width = len(label) * _ADV
            self.text(self.w - width, 0, label, fill=fg, max_width=width)
            right = self.w - width
        self.text(1 if inverted else 0, 0, title, fill=fg, max_width=right - _ADV - 1)
        return _LINE + (2 if self.panel.tall else 0)

    def kv(self, y: int, label: str, value: str) -> int:
        """A label left and its value right-aligned on one line."""
        used = self.text_right(self.w - 1, y, value)
        self.text(0, y, label, max_width=self.w - used - _ADV)
        return y + _LINE


def _fit(text: str, max_width: int, scale: int, ellipsis: bool = False) -> tuple[str, bool, int]:
    """(shown text, ends in an ellipsis, width in px) for one line in the 6 px font."""
    shown, cut = fit_text(text, max_width, scale=scale)
    if ellipsis and not cut:
        room = max_width // (_ADV * scale) - 1
        shown, cut = (shown[:room].rstrip(), True) if room >= 0 else ("", False)
    return shown, cut, (len(shown) + (1 if cut else 0)) * _ADV * scale


def _ascii(text: str) -> str:
    return "".join(c if " " <= c <= "~" else (" " if c in "\t\n\r" else "?") for c in text)


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _bytes(n: int) -> str:
    for unit, size in (("T", 2**40), ("G", 2**30), ("M", 2**20)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{max(0, n) // 1024}K"


def _percent(fraction: float) -> str:
    """Rounded down, so 99.99% reads 99.9% and only a finished job says 100%."""
    fraction = min(1.0, max(0.0, fraction))
    if fraction >= 1.0:
        return "100%"
    return f"{math.floor(fraction * 1000) / 10:.1f}%"


def _percent_bar(s: _Surface, y: int, fraction: float) -> int:
    """ "87.3% [#####    ]" on one line (short panel) or a big number over a bar (tall)."""
    text = _percent(fraction)
    if s.panel.tall:
        s.text_center(y, text, scale=3)
        y += _ROWS * 3 + 2
        s.bar(0, y, s.w, 10, fraction)
        return y + 14
    used = s.text(0, y, text, max_width=5 * _ADV)
    s.bar(used + 3, y + 1, s.w - used - 3, 8, fraction)
    return y + _LINE


# --------------------------------------------------------------------------- pages

def _boot(s: _Surface, page: BootPage, age: float | None, stale: bool) -> None:
    y = s.title_bar("Hearth", age, stale)
    if s.panel.tall:
        y += 8
    # 2x on both panels: "Starting" at 3x would be 144 px wide.
    s.text_center(y, "Starting", scale=2)
    y += _ROWS * 2 + (14 if s.panel.tall else 2)
    if page.step:
        s.text_center(y, page.step)
        y += _LINE
    if page.detail:
        y = s.paragraph(y, page.detail, s.h - _LINE - 1)
    parts = [page.version, f"up {_duration(page.elapsed)}" if page.elapsed is not None else ""]
    footer = " ".join(p for p in parts if p)
    if footer and y <= s.h - _ROWS:
        s.text_center(s.h - _ROWS, footer)


def _sync(s: _Surface, page: SyncPage, age: float | None, stale: bool) -> None:
    y = s.title_bar("Node synced" if page.synced else "Syncing", age, stale)
    y = _percent_bar(s, y, 1.0 if page.synced else page.progress)
    disk = f"{_bytes(page.disk_free)} free" if page.disk_free is not None else "--"
    if s.panel.tall:
        y = s.kv(y, "Blocks", str(page.blocks))
        y = s.kv(y, "Headers", str(page.headers))
        y = s.kv(y, "ETA", "done" if page.synced else _duration(page.eta_seconds))
        y = s.kv(y, "Peers", str(page.peers))
        y = s.kv(y, "Disk", disk)
    else:
        s.text(0, y, f"Blk {page.blocks}/{page.headers}")
        y += _LINE
        eta = "" if page.synced else f"ETA {_duration(page.eta_seconds)}"
        y = s.kv(y, eta, f"{page.peers} peer{'s' if page.peers != 1 else ''}")
        s.text(0, y, f"Disk {disk}")
        y += _LINE
    if page.note:
        s.text(0, y, page.note)


def _index(s: _Surface, page: IndexPage, age: float | None, stale: bool) -> None:
    y = s.title_bar(page.phase, age, stale)
    y = _percent_bar(s, y, page.fraction)
    if s.panel.tall:
        y = s.kv(y, "Wallet", page.wallet)
        y = s.kv(y, "Blocks", f"{page.done}/{page.total}")
        if page.height is not None:
            y = s.kv(y, "Height", str(page.height))
        s.kv(y, "ETA", _duration(page.eta_seconds))
        return
    s.text(0, y, f"Wallet {page.wallet}")
    y += _LINE
    s.text(0, y, f"{page.done}/{page.total} blocks")
    y += _LINE
    s.kv(y, f"at {page.height}" if page.height is not None else "", f"ETA {_duration(page.eta_seconds)}")


def _pairing(s: _Surface, page: PairingPage, age: float | None, stale: bool) -> None:
    qr = make_pairing_qr(page.payload, text_mode=page.text_mode)
    layout = pairing_layout(s.panel, len(qr.matrix), stale=stale)
    # Lit field, unlit modules: phones expect dark modules on a light background.
    s.rect(0, 0, s.w - 1, s.h - 1, fill=1)
    for row, bits in enumerate(qr.matrix):
        for col, dark in enumerate(bits):
            if dark:
                x = layout.x + col * layout.scale
                y = layout.y + row * layout.scale
                s.rect(x, y, x + layout.scale - 1, y + layout.scale - 1, fill=0)
    left, right, top, bottom = _qr_text_room(s.panel, layout)
    if left >= 4 * _ADV:
        # The caption goes in the left column, dark on the lit field.
        lines = s.wrap(page.caption, left)[: s.h // _LINE]
        y0 = (s.h - len(lines) * _LINE) // 2
        for i, line in enumerate(lines):
            s.text_center(y0 + i * _LINE, line, fill=0, x0=0, x1=left - 1)
    if not stale:
        return
    marker = ["STALE"] + ([_age(age)] if age is not None else [])
    if right >= len(marker[0]) * _TINY_ADV:
        for i, part in enumerate(marker):
            x = s.w - right + (right - len(part) * _TINY_ADV) // 2
            s.tiny(x, 2 + i * 7, part, fill=0, max_width=right)
    elif max(top, bottom) >= _TINY_ROWS + 2:
        text = " ".join(marker)
        y = s.h - bottom + (bottom - _TINY_ROWS) // 2 if bottom >= top else (top - _TINY_ROWS) // 2
        s.tiny((s.w - len(text) * _TINY_ADV) // 2, y, text, fill=0)


def pairing_layout(panel: Panel, modules: int, *, stale: bool = False) -> QRLayout:
    """Where the pairing page puts a ``modules``-wide symbol: the largest scale, except
    that a STALE page steps the scale down until the marker has room outside a 4-module
    quiet zone (never below ``MIN_QR_SCALE``), rather than hide that the code may be old."""
    layout = qr_layout(panel, modules)
    while stale and not _marker_fits(panel, layout) and layout.scale > MIN_QR_SCALE:
        layout = qr_layout(panel, modules, scale=layout.scale - 1)
    return layout


def _marker_fits(panel: Panel, layout: QRLayout) -> bool:
    _, right, top, bottom = _qr_text_room(panel, layout)
    return right >= 5 * _TINY_ADV or max(top, bottom) >= _TINY_ROWS + 2


def _qr_text_room(panel: Panel, layout: QRLayout) -> tuple[int, int, int, int]:
    """Widths of the left/right columns and heights of the top/bottom bands left outside
    a 4-module quiet zone: text any closer can confuse a scanner."""
    quiet = 4 * layout.scale
    return (max(0, layout.x - quiet),
            max(0, panel.width - (layout.x + layout.size) - quiet),
            max(0, layout.y - quiet),
            max(0, panel.height - (layout.y + layout.size) - quiet))


def _recovery(s: _Surface, page: RecoveryWordsPage, age: float | None, stale: bool) -> None:
    per = words_per_page(s.panel)
    if len(page.words) > per:
        raise ValueError(f"a {s.w}x{s.h} screen shows {per} recovery words, got {len(page.words)}")
    last = page.first + len(page.words) - 1
    y = s.title_bar(f"Words {page.first}-{last} of {page.total}", age, stale)
    number_cells = len(str(page.total)) + 1
    for i, word in enumerate(page.words):
        clean = _ascii(word)
        # A cut word would be a wrong backup: refuse rather than ellipsize.
        if clean != word or (number_cells + len(word)) * _ADV > s.w:
            raise ValueError(f"recovery word {page.first + i} cannot be shown whole on a {s.w} px line")
        s.text(0, y, f"{page.first + i:>{number_cells - 1}} {word}")
        y += _LINE
    if page.hint:
        s.text_center(s.h - _ROWS, page.hint)


def _usb(s: _Surface, page: UsbBackupPage, age: float | None, stale: bool) -> None:
    failed = page.state is UsbBackupState.FAILED
    y = s.title_bar("USB backup", age, stale, inverted=failed)
    big = 2
    if s.panel.tall:
        y += 6
    if page.state is UsbBackupState.RUNNING:
        s.text_center(y, "Writing...", scale=big)
        y += _ROWS * big + 2
        if page.target:
            s.text_center(y, f"to {page.target}")
            y += _LINE
        if page.progress is not None:
            y = _percent_bar(s, y, page.progress)
        if y <= s.h - _ROWS:
            s.text_center(s.h - _ROWS, "Do not unplug")
    elif page.state is UsbBackupState.OK:
        s.text_center(y, page.headline, scale=big)
        y += _ROWS * big + 2
        if page.note or page.target:
            s.text_center(y, page.note or f"on {page.target}")
        s.text_center(s.h - _ROWS, "Safe to unplug")
    else:
        s.text_center(y, "FAILED", scale=big)
        y += _ROWS * big + 2
        s.paragraph(y, page.reason or "unknown error", s.h - 1)


def _update(s: _Surface, page: UpdatePage, age: float | None, stale: bool) -> None:
    y = s.title_bar("Update", age, stale, inverted=page.alert)
    if s.panel.tall:
        y += 6
    bottom = s.h - (_ROWS + 1 if page.hint else 0) - 1
    for line in s.wrap(page.headline, s.w)[:2]:  # "Update 0.1.0 -> 0.1.1?" is 22 cells
        s.text_center(y, line)
        y += _LINE
    y += 2
    if page.percent >= 0:
        y = _percent_bar(s, y, page.percent / 100)
    if page.detail:
        s.paragraph(y, page.detail, bottom)
    if page.hint:
        s.text_center(s.h - _ROWS, page.hint)


def _watchtower(s: _Surface, page: WatchtowerPage, age: float | None, stale: bool) -> None:
    y = s.title_bar("Watchtower", age, stale)
    scale = 3 if s.panel.tall else 2
    lines = s.wrap(page.headline, s.w, scale=scale)
    if len(lines) > 2:
        scale, lines = 1, s.wrap(page.headline, s.w)
    for line in lines[:2]:
        s.text_center(y, line, scale=scale)
        y += _ROWS * scale + 1
    rest = " ".join(p for p in (f"Channel {page.channel}" if page.channel else "", page.detail) if p)
    if rest:
        s.paragraph(y + 1, rest, s.h - 1)


def _error(s: _Surface, page: ErrorPage, age: float | None, stale: bool) -> None:
    y = s.title_bar(f"! {page.title}", age, stale, inverted=True)
    if page.detail:
        s.paragraph(y + 1, page.detail, s.h - 1)


def _countdown(s: _Surface, overlay: CountdownOverlay) -> None:
    """A framed box over the page; big seconds; releasing the button cancels."""
    x0, y0, x1, y1 = 3, 2, s.w - 4, s.h - 3
    s.rect(x0, y0, x1, y1, fill=0, outline=1)
    inner_w = x1 - x0 - 3
    lines = s.wrap(f"Hold to {overlay.action}:", inner_w)[:2]
    y = y0 + 2
    for line in lines:
        s.text_center(y, line, x0=x0 + 2, x1=x1 - 2)
        y += _LINE
    scale = 4 if s.panel.tall else 2
    if s.panel.tall:
        y += 8
    s.text_center(y, str(max(0, overlay.seconds_left)), scale=scale, x0=x0 + 2, x1=x1 - 2)
    s.text_center(y1 - 1 - _ROWS, "Release: cancel", x0=x0 + 2, x1=x1 - 2)


#: Each page type's layout (one entry per member of the ``Page`` union).
_LAYOUTS: dict[type, Callable[[_Surface, Any, float | None, bool], None]] = {
    BootPage: _boot, SyncPage: _sync, IndexPage: _index, PairingPage: _pairing,
    RecoveryWordsPage: _recovery, UsbBackupPage: _usb, UpdatePage: _update,
    WatchtowerPage: _watchtower, ErrorPage: _error,
}
