"""The ``display`` service: what the box is doing, on the OLED, from the status bus.

Reads every service's snapshot (``appliance.status``), picks the page that matters most
(the reset countdown, then errors and stale services, then the pairing QR while the
window is open, then wallet backfill, then node sync), renders it with the pure page
code and presents it through luma (a real panel on I2C, or luma's dummy device in sim
and tests, with every frame saved as PNG). A service that falls silent is shown stale,
never as fine; the display itself publishes on the bus so its own death is visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from .. import __version__
from ..config import Config
from ..control import ControlError, ask
from ..control.messages import (
    PairingPayload,
    Payload,
    PhraseWords,
    PhraseWordsReply,
    UpdateView,
    UpdateViewReply,
)
from ..devices.frames import FrameRecorder, to_terminal
from ..devices.oled import Dimmer, OledDevice, make_device, present
from ..devices.pages import (
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
    render,
)
from ..devices.power import PowerMonitor
from ..status import Phase, ServiceState, StatusPublisher, StatusSubscriber
from ..status.fields import (
    LAST_BREACH_STOPPED,
    LAST_BREACH_TS,
    UpdateState,
    UsbState,
    breach_txid,
    restored_box,
    tor_line,
    update_state,
    usb_state,
)
from ..update.guard import DATA_TOO_NEW

__all__ = ["choose_page", "main", "show_step"]

log = logging.getLogger("display")

EXPECTED = ("node", "indexer")


_ALTERNATE_S = 6.0  # the pairing page and the stock-wallet server page take turns
_BREACH_SHOWN_S = 24 * 3600.0  # a breach the tower answered stays on screen for a day
_DISK_LOW_BYTES = 1 << 30  # below 1 GiB free bitcoind is close to stopping (prune floor)
_UNKNOWN_SHOWN_S = 600.0  # "Unknown wallet: press the button" stays this long


_USB_STATES = {UsbState.RUNNING: UsbBackupState.RUNNING, UsbState.OK: UsbBackupState.OK,
               UsbState.FAILED: UsbBackupState.FAILED}


def choose_page(states: dict[str, ServiceState], pairing: Payload | None,
                started: float, now: float | None = None,
                phrase: PhraseWordsReply | None = None, *, under_voltage: bool = False,
                unknown_wallet: bool = False,
                update: UpdateViewReply | None = None) -> tuple[Page, float | None, bool]:
    """The page to show, with the age and staleness of the data behind it.

    ``phrase`` is the usb service's ``phrase.words`` answer while the recovery phrase
    is up: it goes before pairing (the gate opens only once it is acknowledged).
    ``unknown_wallet``: a client recently asked about scripts of no registered wallet.
    ``update``: the usb service's ``update.view`` while a stick's update is in hand
    (asked, installing: before everything but power) or a rollback is to be told."""
    if under_voltage:
        # Before anything else: a weak supply corrupts SD cards, whatever else is wrong.
        return ErrorPage.under_voltage(), None, False
    told = _update_page(update)
    if told is not None and update is not None and update.state != UpdateState.ROLLED_BACK:
        # The owner just plugged the stick in and is waiting for the question (or the
        # install runs, and must not be unplugged): nothing else matters more now.
        return told, None, False
    for name, refusing in states.items():  # a slot refusing data from a newer Hearth (a rollback)
        if refusing.status is not None and refusing.status.counters.get(DATA_TOO_NEW):
            return ErrorPage.data_too_new(name, refusing.status.detail), refusing.age_s, False
    for name in EXPECTED:
        st = states.get(name)
        if st is not None and st.stale and st.age_s is not None:
            return ErrorPage(f"{name} silent", f"no news for {st.age_s:.0f} s"), st.age_s, True
        if st is not None and st.status is not None and st.status.phase == Phase.ERROR:
            return ErrorPage.service_fatal(name, st.status.last_error or ""), st.age_s, False
    full = [name for name in ("tower", "backup", "indexer") if (st := states.get(name)) is not None
            and st.status is not None and st.status.counters.get("disk_full")]
    if full:
        # Before "service down": a full disk is why services fail, and what to fix.
        return ErrorPage.disk_full(full), None, False
    sup = states.get("supervisor")
    if sup is not None and sup.status is not None and sup.status.phase == Phase.DEGRADED:
        # A program supervisord gave up on (FATAL) or stopped for restarting in a loop.
        return (ErrorPage("Service down", sup.status.detail or "see appliance status"),
                sup.age_s, sup.stale)
    usb = states.get("usb")
    if usb is not None and usb.status is not None and not usb.stale:
        # A stick is in: the owner is watching for "Backup OK".
        state = _USB_STATES.get(usb_state(usb.status.counters) or UsbState.IDLE)
        if state is not None:
            detail = usb.status.detail or ""
            if state is UsbBackupState.FAILED:
                return (UsbBackupPage(state, reason=usb.status.last_error or detail), usb.age_s,
                        usb.stale)
            box = restored_box(usb.status.counters)
            if state is UsbBackupState.OK and box is not None:
                return (UsbBackupPage(state, headline="Restored", note=f"box {box}"), usb.age_s,
                        usb.stale)
            return UsbBackupPage(state), usb.age_s, usb.stale
    if phrase and phrase.words:
        return (RecoveryWordsPage(tuple(phrase.words), phrase.first, phrase.total,
                                  hint="Wrote them? Press" if phrase.last else "Press: next"),
                None, False)
    node = states.get("node")
    if node is not None and node.status is not None:
        free = int(node.status.counters.get("disk_free_bytes", -1))
        if 0 <= free < _DISK_LOW_BYTES:
            return ErrorPage.disk_nearly_full(free), node.age_s, node.stale
    if pairing and pairing.payload:
        now = time.monotonic() if now is None else now
        server, fingerprint = pairing.tls_server, pairing.tls_fingerprint
        if server and int(now // _ALTERNATE_S) % 2:
            # For phone wallets without Noise: their server setting, and the start of
            # the certificate fingerprint to compare with what the wallet shows.
            caption = "Wallet server TLS " + (fingerprint or "")[:11]
            return PairingPage(server, caption=caption, text_mode=True), None, False
        url = pairing.setup_url
        if url:
            # The setup page's link: any phone camera opens it; the browser then shows
            # the certificate, whose fingerprint should start like this.
            # Groups of 4 hex digits: the 31 px column beside a version 2 code holds 5.
            hexes = (fingerprint or "").replace(":", "")
            caption = f"Cert {hexes[:4]} {hexes[4:8]}"
            return PairingPage(url, caption=caption), None, False
        return PairingPage(pairing.payload), None, False
    if unknown_wallet:
        idx = states.get("indexer")
        return ErrorPage.unknown_wallet(), idx.age_s if idx else None, False
    if told is not None:  # a rollback to tell: after what needs a press today
        return told, None, False
    tower = states.get("tower")
    if tower is not None and tower.status is not None:
        seen = float(tower.status.counters.get(LAST_BREACH_TS, 0))
        if seen and time.time() - seen < _BREACH_SHOWN_S:
            stopped = bool(tower.status.counters.get(LAST_BREACH_STOPPED))
            breach = breach_txid(tower.status.counters)
            return (WatchtowerPage("Breach stopped" if stopped else "Breach! Penalty sent",
                                   detail=f"tx {breach}" if breach else ""),
                    tower.age_s, tower.stale)
    idx = states.get("indexer")
    if idx is not None and idx.status is not None and idx.status.phase == Phase.BACKFILLING:
        c = idx.status.counters
        return (IndexPage(idx.status.detail or "wallet", int(c.get("backfill_done", 0)),
                          int(c.get("backfill_total", 0)), eta_seconds=idx.status.eta_s,
                          phase="Backfilling"), idx.age_s, idx.stale)
    node = states.get("node")
    if node is not None and node.status is not None and node.status.phase in (
            Phase.SYNCING, Phase.READY):
        c = node.status.counters
        free = int(c.get("disk_free_bytes", -1))
        return (SyncPage(int(c.get("blocks", 0)), int(c.get("headers", 0)),
                         node.status.progress if node.status.progress is not None else 1.0,
                         int(c.get("peers", 0)), disk_free=free if free >= 0 else None,
                         eta_seconds=node.status.eta_s,
                         synced=node.status.phase == Phase.READY, note=_tor_note(states)),
                node.age_s, node.stale)
    step = node.status.detail if node is not None and node.status is not None else "starting"
    return BootPage(step, version=__version__, elapsed=time.monotonic() - started), None, False


_ALERTS = (UpdateState.REFUSED, UpdateState.FAILED, UpdateState.ROLLED_BACK)


def _update_page(view: UpdateViewReply | None) -> UpdatePage | None:
    if view is None or view.state == UpdateState.IDLE or not view.headline:
        return None
    return UpdatePage(view.headline, view.detail, view.percent, view.hint,
                      alert=view.state in _ALERTS)


def _update_info(cfg: Config, states: dict[str, ServiceState]) -> UpdateViewReply | None:
    usb = states.get("usb")
    if usb is None or usb.status is None or usb.stale:
        return None
    if update_state(usb.status.counters) in (None, UpdateState.IDLE):
        return None
    try:  # the words come from the usb service, which holds the question
        return ask(cfg.control_endpoint("usb"), UpdateView(), timeout=2)
    except ControlError:
        return None


def _tor_note(states: dict[str, ServiceState]) -> str:
    """A line under the node's page: whether wallets can reach the box away from home."""
    tor = states.get("tor")
    if tor is None or tor.status is None or tor.stale:
        return ""
    return tor_line(tor.status.counters)


def _phrase_info(cfg: Config, states: dict[str, ServiceState]) -> PhraseWordsReply | None:
    usb = states.get("usb")
    if usb is None or usb.status is None or int(usb.status.counters.get("phrase_first", -1)) < 0:
        return None
    try:  # the words never travel on the bus: ask the usb service for this screen's
        return ask(cfg.control_endpoint("usb"), PhraseWords(), timeout=2)
    except ControlError:
        return None


def _pairing_info(cfg: Config, states: dict[str, ServiceState]) -> Payload | None:
    idx = states.get("indexer")
    if idx is None or idx.status is None or not idx.status.counters.get("pairing_open"):
        return None
    try:  # the token itself never travels on the bus: ask the indexer for it
        payload = ask(cfg.control_endpoint("indexer"), PairingPayload(), timeout=2)
    except ControlError:
        return None
    return payload if payload.payload else None


def _open_panel(cfg: Config) -> tuple[OledDevice, Panel]:
    dc = cfg.display
    device = make_device(dc.driver, height=dc.height or None, i2c_port=dc.i2c_port,
                         i2c_address=dc.i2c_address, rotate=dc.rotate, simulate=dc.simulate)
    return device, PANEL_128X128 if device.height == 128 else PANEL_128X64


def show_step(cfg: Config, step: str, detail: str = "", *, error: bool = False) -> Path | None:
    """Draw one "Starting" page and leave it lit after this process exits.

    For the time before supervisord starts this service (first boot: growing the card,
    making keys), so the panel is never dark while the box works. Returns the saved frame
    when ``frames_dir`` is set. Raises ``OledError`` when there is no panel.
    """
    device, panel = _open_panel(cfg)
    device.persist = True  # luma's atexit cleanup would switch the panel off
    page = ErrorPage(step, detail) if error else BootPage(step, detail=detail, version=__version__)
    frame = render(page, panel)
    present(device, frame)
    if not cfg.display.frames_dir:
        return None
    return FrameRecorder(Path(cfg.display.frames_dir)).record(frame)


async def main(cfg: Config) -> None:
    dc = cfg.display
    device, panel = _open_panel(cfg)
    dimmer = Dimmer(device, dim_after=dc.dim_after_s)
    recorder = FrameRecorder(Path(dc.frames_dir)) if dc.frames_dir else None
    started = time.monotonic()
    power = PowerMonitor(Path(dc.hwmon_dir))
    shown: tuple[str, str] = ("", "")
    unknown = _UnknownWallets()
    async with StatusPublisher(cfg.hearth.run_dir, "display") as bus, \
            StatusSubscriber(cfg.hearth.run_dir, stale_after=dc.stale_after_s,
                             expected=EXPECTED) as sub:
        runner = asyncio.create_task(sub.run())
        try:
            while True:
                states = sub.snapshot()
                pairing = await asyncio.to_thread(_pairing_info, cfg, states)
                low_power = power.under_voltage()
                phrase = await asyncio.to_thread(_phrase_info, cfg, states)
                update = await asyncio.to_thread(_update_info, cfg, states)
                page, age, stale = choose_page(states, pairing, started, phrase=phrase,
                                               under_voltage=low_power,
                                               unknown_wallet=unknown.recent(states),
                                               update=update)
                asking = update is not None and update.state == UpdateState.ASKING
                overlay = _countdown(states, "say no" if asking else "reset pairing")
                frame = render(page, panel, age=age, stale=stale, overlay=overlay)
                key = (type(page).__name__, str(overlay))
                if isinstance(page, PairingPage) and page.text_mode:
                    key = ("ServerPage", str(overlay))
                if key != shown or overlay is not None:
                    dimmer.activity()  # a new page is worth seeing at full brightness
                    shown = key
                dimmer.tick()
                present(device, frame)
                if recorder is not None and recorder.record(frame) is not None:
                    log.debug("frame:\n%s", to_terminal(frame))
                bus.update(phase=Phase.READY, detail=type(page).__name__,
                           counters={"frames": bus.status.counters.get("frames", 0) + 1,
                                     "under_voltage": int(low_power),
                                     "under_voltage_events": power.alarms})
                await asyncio.sleep(dc.refresh_s)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


class _UnknownWallets:
    """Whether the indexer's ``unknown_script_queries`` grew in the last 10 minutes."""

    def __init__(self) -> None:
        self.count: int | None = None
        self.since = -_UNKNOWN_SHOWN_S

    def recent(self, states: dict[str, ServiceState], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        idx = states.get("indexer")
        if idx is None or idx.status is None:
            return False
        count = int(idx.status.counters.get("unknown_script_queries", 0))
        if self.count is not None and count > self.count:
            self.since = now
        if idx.status.counters.get("pairing_open"):
            self.since = -_UNKNOWN_SHOWN_S  # the press was made: the page leads on
        self.count = count
        return now - self.since < _UNKNOWN_SHOWN_S


def _countdown(states: dict[str, ServiceState], action: str = "reset pairing") -> CountdownOverlay | None:
    """The hold countdown; while an update question is up a long press says no to it."""
    button = states.get("button")
    if button is None or button.status is None or button.stale:
        return None
    left = int(button.status.counters.get("countdown", -1))
    return CountdownOverlay(left, action) if left >= 0 else None
