"""appliance.devices.pages: every page at 128x64 and 128x128, checked pixel by pixel.

Each page is rendered on a canvas with a margin around the panel, so anything drawn past
the panel's edge shows up as lit margin pixels. A few frames are kept as golden PNGs in
firmware-tests/vectors/display/ (set HEARTH_UPDATE_GOLDEN=1 to rewrite them after an
intended layout change, then look at them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from appliance.devices.pages import (
    PANEL_128X64,
    PANEL_128X128,
    BootPage,
    CountdownOverlay,
    ErrorPage,
    IndexPage,
    Page,
    PairingPage,
    Panel,
    RecoveryWordsPage,
    SyncPage,
    UpdatePage,
    UsbBackupPage,
    UsbBackupState,
    WatchtowerPage,
    fit_text,
    render,
    render_with_margin,
    words_per_page,
)
from appliance.usb.phrase import PhraseScreens

from .util import find_bar, ink_rows, lit_count, lit_in, margin_is_empty

GOLDEN = Path(__file__).resolve().parents[2] / "vectors" / "display"
MARGIN = 12
PANELS = [PANEL_128X64, PANEL_128X128]
PAYLOAD = "HEARTH1:MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPIYTEMZUGU3DOOBZ"
WORDS = "abandon ability able about above absent absorb abstract absurd abuse access accident".split()
LONG = "x" * 200  # longer than any line

SYNC = SyncPage(blocks=812345, headers=840000, progress=0.8734, peers=8, disk_free=120 * 2**30,
                eta_seconds=11520, note="pruned node")
PAGES: dict[str, Page] = {
    "boot": BootPage(step="Waiting for bitcoind", detail="Loading block index", version="v0.1.0", elapsed=75),
    "sync": SYNC,
    "synced": SyncPage(blocks=840000, headers=840000, progress=0.99999, peers=10, synced=True),
    "index": IndexPage(wallet="1a2b3c4d", done=12000, total=28000, height=812000, phase="Backfill",
                       eta_seconds=700),
    "pairing": PairingPage(PAYLOAD),
    "words": RecoveryWordsPage(tuple(WORDS[:4]), 1, 12),
    "usb_running": UsbBackupPage(UsbBackupState.RUNNING, target="HEARTHBK", progress=0.45),
    "usb_ok": UsbBackupPage(UsbBackupState.OK, target="HEARTHBK"),
    "usb_failed": UsbBackupPage(UsbBackupState.FAILED, reason="No space left on the stick"),
    "watchtower": WatchtowerPage(channel="812345x12x1", detail="penalty tx confirmed"),
    "update_ask": UpdatePage("0.1.0 -> 0.1.1?", "Press to install", hint="Hold or wait 60s: no"),
    "update_installing": UpdatePage("Installing 0.1.1", "Copying image to rootfs.1", 90,
                                    "Do not unplug power"),
    "update_refused": UpdatePage("Update refused", "Bad signature: x.raucb is not from Hearth's key",
                                 hint="Nothing was changed", alert=True),
    "update_rolled_back": UpdatePage("Update rolled back", "Update to 0.1.1 was rolled back",
                                     hint="Press: OK", alert=True),
    "fatal": ErrorPage.service_fatal("indexer"),
    "disk_full": ErrorPage.disk_nearly_full(2 * 2**30, 500 * 2**30),
    "under_voltage": ErrorPage.under_voltage(),
}
TITLED = [name for name in PAGES if name != "pairing"]
INVERTED_TITLE = {"fatal", "disk_full", "under_voltage", "usb_failed", "update_refused",
                  "update_rolled_back"}
# Pages whose fields are free text: the same page with every text field far too long.
OVERLONG: dict[str, Page] = {
    "boot": BootPage(step=LONG, detail=LONG, version=LONG, elapsed=10**9),
    "sync": SyncPage(blocks=10**12, headers=10**12, progress=0.5, peers=10**6, disk_free=10**18,
                     eta_seconds=10**12, note=LONG),
    "index": IndexPage(wallet=LONG, done=10**12, total=10**13, height=10**12, phase=LONG, eta_seconds=1e12),
    "pairing": PairingPage(PAYLOAD, caption=LONG),
    "usb_running": UsbBackupPage(UsbBackupState.RUNNING, target=LONG, progress=0.5),
    "usb_ok": UsbBackupPage(UsbBackupState.OK, target=LONG),
    "usb_failed": UsbBackupPage(UsbBackupState.FAILED, reason=" ".join([LONG] * 5)),
    "watchtower": WatchtowerPage(headline=LONG, channel=LONG, detail=LONG),
    "update": UpdatePage(LONG, " ".join([LONG] * 5), 100, LONG, alert=True),
    "error": ErrorPage(LONG, " ".join(["word"] * 200)),
}


def _recovery_pages(words: Sequence[str], panel: Panel) -> list[RecoveryWordsPage]:
    """The screens the display shows, paged as the usb service pages the phrase."""
    screens, pages = PhraseScreens(len(words), words_per_page(panel)), []
    while True:
        first, end = screens.span()
        last = end >= len(words)
        pages.append(RecoveryWordsPage(tuple(words[first:end]), first + 1, len(words),
                                       hint="Press: done" if last else "Press: next"))
        if screens.press():
            return pages


def _page_for(name: str, panel: Panel) -> Page:
    if name == "words" and panel.tall:
        return _recovery_pages(WORDS, panel)[0]
    return PAGES[name]


def _panel_id(panel: Panel) -> str:
    return f"{panel.width}x{panel.height}"


# --------------------------------------------------------------------------- every page

@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
@pytest.mark.parametrize("name", list(PAGES))
def test_page_stays_on_the_panel_and_draws_something(name: str, panel: Panel) -> None:
    page = _page_for(name, panel)
    for age in (None, 5.0, 3600.0):
        big = render_with_margin(page, panel, MARGIN, age=age)
        assert margin_is_empty(big, MARGIN), f"{name} draws outside the panel (age {age})"
        frame = render(page, panel, age=age)
        assert frame.size == panel.size and frame.mode == "1"
        assert frame.tobytes() == big.crop((MARGIN, MARGIN, MARGIN + panel.width,
                                            MARGIN + panel.height)).tobytes()
        assert 100 < lit_count(frame) < panel.width * panel.height


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
@pytest.mark.parametrize("name", list(OVERLONG))
def test_overlong_text_is_cut_inside_the_panel(name: str, panel: Panel) -> None:
    big = render_with_margin(OVERLONG[name], panel, MARGIN, age=2.0)
    assert margin_is_empty(big, MARGIN)


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
@pytest.mark.parametrize("name", TITLED)
def test_title_line_and_body_lines_have_ink(name: str, panel: Panel) -> None:
    frame = render(_page_for(name, panel), panel, age=7.0)
    rows = ink_rows(frame)
    assert rows & set(range(0, 10)), "title line is empty"
    assert rows & set(range(10, 30)), "no body under the title"
    # the age sits at the top right
    assert lit_in(frame, (panel.width - 12, 0, panel.width, 10)) > 0


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_sync_page_lines_each_carry_text(panel: Panel) -> None:
    frame = render(SYNC, panel, age=1.0)
    bar = find_bar(frame)
    rows = ink_rows(frame)
    # every 10-row text line below the bar has ink down to the last field
    first_line = bar.top + (14 if panel.tall else 9)
    lines = 6 if panel.tall else 4
    for i in range(lines):
        band = set(range(first_line + 10 * i, first_line + 10 * i + 10))
        assert rows & band, f"line {i} below the bar is empty"


# --------------------------------------------------------------------------- age / STALE

@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
@pytest.mark.parametrize("name", list(PAGES))
def test_stale_data_is_marked(name: str, panel: Panel) -> None:
    page = _page_for(name, panel)
    fresh = render(page, panel, age=29.0, stale_after=30.0)
    stale = render(page, panel, age=90.0, stale_after=30.0)
    assert ImageChops.difference(fresh, stale).getbbox() is not None
    if name in INVERTED_TITLE:
        return  # the badge is a dark box there: test_inverted_title_shows_stale_badge_as_a_dark_box
    if name == "pairing":
        return  # where the marker goes: test_pairing_qr.py
    # an inverted badge: the top-right corner turns mostly lit
    corner = (panel.width - 40, 0, panel.width, 10)
    assert lit_in(stale, corner) > 0.5 * 40 * 10 > lit_in(fresh, corner)


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_inverted_title_shows_stale_badge_as_a_dark_box(panel: Panel) -> None:
    page = ErrorPage.under_voltage()
    fresh = render(page, panel, age=1.0)
    stale = render(page, panel, age=600.0)
    corner = (panel.width - 40, 0, panel.width, 10)
    assert lit_in(stale, corner) < 0.5 * 40 * 10 < lit_in(fresh, corner)


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_the_age_moves_so_a_live_display_never_looks_frozen(panel: Panel) -> None:
    frames = {render(SYNC, panel, age=float(age)).tobytes() for age in range(0, 30, 1)}
    assert len(frames) == 30


def test_no_age_no_marker() -> None:
    frame = render(SYNC, PANEL_128X64, age=None)
    assert lit_in(frame, (100, 0, 128, 10)) == 0


def test_callers_verdict_on_staleness_wins() -> None:
    corner = (88, 0, 128, 10)
    by_age = render(SYNC, PANEL_128X64, age=100.0)
    told_fresh = render(SYNC, PANEL_128X64, age=100.0, stale=False)
    told_stale = render(SYNC, PANEL_128X64, age=3.0, stale=True)
    no_age_stale = render(SYNC, PANEL_128X64, stale=True)
    assert lit_in(by_age, corner) > 200 and lit_in(told_stale, corner) > 200
    assert lit_in(told_fresh, corner) < 100
    assert lit_in(no_age_stale, (96, 0, 128, 10)) > 150  # "STALE" alone, still a badge


# --------------------------------------------------------------------------- progress bars

@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.25, 0.5, 0.8734, 0.999, 1.0])
def test_sync_bar_width_is_proportional(panel: Panel, fraction: float) -> None:
    frame = render(SyncPage(blocks=1, headers=2, progress=fraction, peers=1), panel)
    bar = find_bar(frame)
    inner = bar.right - bar.left + 1 - 4
    assert abs(bar.fill - fraction * inner) <= 0.5 + 1e-9
    if panel.tall:
        assert bar.right - bar.left + 1 == panel.width


@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_index_and_usb_bars_follow_progress(panel: Panel) -> None:
    for done in (0, 7000, 14000, 28000):
        bar = find_bar(render(IndexPage(wallet="w", done=done, total=28000), panel))
        assert abs(bar.fraction - done / 28000) < 0.02
    bar = find_bar(render(UsbBackupPage(UsbBackupState.RUNNING, progress=0.3), panel), min_run=50)
    assert abs(bar.fraction - 0.3) < 0.02
    for percent in (0, 40, 90, 100):
        bar = find_bar(render(UpdatePage("Installing 0.1.1", "step", percent), panel), min_run=50)
        assert abs(bar.fraction - percent / 100) < 0.02


def test_percent_rounds_down_until_done() -> None:
    nearly = render(SyncPage(blocks=1, headers=1, progress=0.99999, peers=1), PANEL_128X64)
    done = render(SyncPage(blocks=1, headers=1, progress=1.0, peers=1), PANEL_128X64)
    # "99.9%" is five cells wide, "100%" four: the percent cells differ
    assert ImageChops.difference(nearly.crop((0, 10, 30, 20)), done.crop((0, 10, 30, 20))).getbbox()


# --------------------------------------------------------------------------- text fitting

def test_fit_text_cuts_with_an_ellipsis_cell() -> None:
    assert fit_text("hello", 30) == ("hello", False)
    assert fit_text("hello!", 30) == ("hell", True)  # 4 cells + the ellipsis cell
    assert fit_text("hello", 5) == ("", False)  # not even an ellipsis fits
    assert fit_text("wide", 47, scale=2) == ("wi", True)
    assert fit_text("caf\u00e9\tok", 60) == ("caf? ok", False)


def test_cut_line_ends_with_three_dots() -> None:
    frame = render(IndexPage(wallet=LONG, done=1, total=2), PANEL_128X64)
    # wallet line: 10..19 on the short panel; the last full cell holds the ellipsis dots
    cell_x = (128 // 6 - 1) * 6
    dots = [frame.getpixel((cell_x + dx, 20 + 7)) for dx in range(6)]
    assert dots == [1, 0, 1, 0, 1, 0]


# --------------------------------------------------------------------------- recovery words

@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_recovery_words_paginate_and_show_every_word(panel: Panel) -> None:
    pages = _recovery_pages(WORDS, panel)
    per = words_per_page(panel)
    assert [p.first for p in pages] == list(range(1, 13, per))
    assert sum(len(p.words) for p in pages) == 12
    assert pages[-1].hint == "Press: done" and all(p.hint == "Press: next" for p in pages[:-1])
    for page in pages:
        frame = render_with_margin(page, panel, MARGIN)
        assert margin_is_empty(frame, MARGIN)
        rows = ink_rows(frame)
        for i in range(len(page.words)):
            top = MARGIN + (12 if panel.tall else 10) + 10 * i
            assert rows & set(range(top, top + 10)), f"word {page.first + i} missing"


def test_recovery_word_never_cut_or_dropped() -> None:
    with pytest.raises(ValueError, match="cannot be shown whole"):
        render(RecoveryWordsPage(("a" * 30,), 1, 1), PANEL_128X64)
    with pytest.raises(ValueError, match="cannot be shown whole"):
        render(RecoveryWordsPage(("caf\u00e9",), 1, 1), PANEL_128X64)
    with pytest.raises(ValueError, match="shows 4 recovery words"):
        render(RecoveryWordsPage(tuple(WORDS[:5]), 1, 12), PANEL_128X64)


# --------------------------------------------------------------------------- overlay

@pytest.mark.parametrize("panel", PANELS, ids=_panel_id)
def test_countdown_overlay_covers_the_page_and_shows_the_seconds(panel: Panel) -> None:
    frames = {}
    for seconds in (4, 3, 2, 1):
        big = render_with_margin(SYNC, panel, MARGIN, age=3.0, overlay=CountdownOverlay(seconds))
        assert margin_is_empty(big, MARGIN)
        frames[seconds] = render(SYNC, panel, age=3.0, overlay=CountdownOverlay(seconds))
    plain = render(SYNC, panel, age=3.0)
    assert all(ImageChops.difference(plain, f).getbbox() for f in frames.values())
    assert len({f.tobytes() for f in frames.values()}) == 4
    # the box is framed: its left border column is lit from top to bottom
    frame = frames[3]
    assert all(frame.getpixel((3, y)) for y in range(2, panel.height - 2))


def test_overlay_works_on_every_page() -> None:
    for name in PAGES:
        for panel in PANELS:
            big = render_with_margin(_page_for(name, panel), panel, MARGIN,
                                     overlay=CountdownOverlay(2, action="reset pairing"))
            assert margin_is_empty(big, MARGIN), name


# --------------------------------------------------------------------------- panels

def test_only_known_panel_sizes() -> None:
    with pytest.raises(ValueError, match="no page layout"):
        Panel(128, 32)


# --------------------------------------------------------------------------- golden frames

GOLDEN_CASES: dict[str, tuple[Page, Panel, float | None, CountdownOverlay | None]] = {
    "sync_128x64": (SYNC, PANEL_128X64, 4.0, None),
    "sync_stale_128x64": (SYNC, PANEL_128X64, 300.0, None),
    "sync_128x128": (SYNC, PANEL_128X128, 4.0, None),
    "pairing_128x64": (PairingPage(PAYLOAD), PANEL_128X64, None, None),
    "countdown_128x64": (SYNC, PANEL_128X64, 4.0, CountdownOverlay(3)),
    "fatal_128x128": (ErrorPage.service_fatal("indexer"), PANEL_128X128, 3.0, None),
    "update_ask_128x64": (PAGES["update_ask"], PANEL_128X64, 1.0, None),
    "update_installing_128x64": (PAGES["update_installing"], PANEL_128X64, 1.0, None),
    "update_refused_128x128": (PAGES["update_refused"], PANEL_128X128, 1.0, None),
}


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_golden_frames(case: str, tmp_path: Path) -> None:
    page, panel, age, overlay = GOLDEN_CASES[case]
    frame = render(page, panel, age=age, overlay=overlay)
    path = GOLDEN / f"{case}.png"
    if os.environ.get("HEARTH_UPDATE_GOLDEN") == "1":
        frame.save(path)
    with Image.open(path) as stored:
        expected = stored.convert("1")
    if ImageChops.difference(expected.convert("L"), frame.convert("L")).getbbox() is not None:
        actual = tmp_path / f"{case}.png"
        frame.save(actual)
        pytest.fail(f"{case} differs from {path}; this run's frame is {actual}")
