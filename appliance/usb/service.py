"""The ``usb`` service (program ``hearth-usb``, root for mount): sticks in, backups out.

* A pyudev monitor on the kernel's udev netlink reports block devices the rule in
  ``/etc/udev/rules.d/90-hearth-usb.rules`` tagged ``hearth_usb`` (USB mass storage).
  On ``add`` of a disk the agent probes it, refuses odd sticks and otherwise writes a
  verified encrypted backup (or restores at first boot); ``remove`` clears the result page.
* Until the owner has paged through the recovery phrase on the OLED, the phrase
  screens are up and a button press (forwarded by the button service as
  ``phrase.press``) moves through them; the last press writes the acknowledgement.
* A stick carrying ``HEARTH/update/*.raucb``: the bundle is copied to the box and
  verified, then the OLED asks "Update 0.1.0 -> 0.1.1? Press to install"
  (:mod:`appliance.update.prompt`); a short press installs with ``rauc install`` and
  reboots, a long press, the timeout or pulling the stick drops it. A rollback of the
  last update is told the same way until a short press.
* Control socket ``<run_dir>/usb.ctl``: ``phrase.words`` (display only), ``phrase.press``
  (button; also the update question's yes/no), ``update.view`` (display), ``backup
  {"device": PATH}`` (the block-device seam: sim and tests hand a loop device or image
  here exactly as udev hands ``/dev/sdX``).

Status bus counters: ``phrase_first``/``phrase_total`` (-1 when no phrase is shown),
``backup_state`` (a :class:`~appliance.status.fields.UsbState`), ``restored_box`` (the
restored box's id while a restore's result is shown), ``backups_ok``, ``backups_failed``,
``update_state`` (an :class:`~appliance.status.fields.UpdateState`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from pathlib import Path

from ..config import Config
from ..control import ControlError, ControlServer
from ..control.messages import (
    PhrasePress,
    PhrasePressed,
    PhraseWords,
    PhraseWordsReply,
    UpdateView,
    UpdateViewReply,
    UsbBackup,
    UsbBackupReply,
)
from ..durability import write_atomic
from ..identity import recovery_phrase
from ..status import Phase, StatusPublisher
from ..status.fields import RESTORED_BOX, UPDATE_STATE, USB_STATE, UpdateState, UsbState, usb_state
from ..status.paths import status_socket_path
from ..update.bundle import BundleError
from ..update.install import Progress, Rebooter, TryBootRebooter, install
from ..update.prompt import Action, UpdatePrompt
from ..update.release import running_version
from ..update.report import last_result_file, read_report
from .agent import Outcome, UsbAgent, box_secret
from .phrase import PhraseScreens, acknowledge, is_acknowledged, own_like, words_per_screen
from .update import clear_incoming

__all__ = ["UsbService", "main"]

log = logging.getLogger("usb")


UDEV_TAG = "hearth_usb"
#: How long a result stays up when the stick was pulled out during the attempt.
_RESULT_AFTER_GONE_S = 30.0
#: The "Restarting into X" page gets this long on the OLED before the reboot.
_SHOW_BEFORE_REBOOT_S = 2.0


class UsbService:
    def __init__(self, cfg: Config, bus: StatusPublisher, *, rebooter: Rebooter | None = None) -> None:
        self.cfg = cfg
        self.bus = bus
        self.agent = UsbAgent(cfg, on_progress=self._progress, on_update=self._checking)
        self.rebooter: Rebooter = rebooter or TryBootRebooter()
        clear_incoming(cfg)  # a bundle copied before a restart is asked about again, not kept
        notice, self.rolled_back_to = rollback_notice(cfg)
        self.prompt = UpdatePrompt(cfg.update.prompt_timeout_s, rolled_back=notice)
        self.installing: asyncio.Future[None] | None = None
        self.lock = asyncio.Lock()
        self.current: str | None = None  # the stick being handled or last handled
        self.gone: str | None = None  # removed while being handled
        # Clears the result of a stick pulled out mid-way; cancelled by the next stick:
        # udev reuses names (/dev/sda again), and a stale timer keyed on the name would
        # clear the next stick's question.
        self.clear_timer: asyncio.TimerHandle | None = None
        self.phrase: PhraseScreens | None = None
        self.restored: str | None = None  # the box id restored from the current stick
        if not is_acknowledged(cfg):
            self.phrase = PhraseScreens(len(recovery_phrase(box_secret(cfg))), words_per_screen(cfg))
        self.control = ControlServer(cfg.control_endpoint("usb"), {
            PhraseWords: self.cmd_phrase_words,
            PhrasePress: self.cmd_phrase_press,
            UsbBackup: self.cmd_backup,
            UpdateView: self.cmd_update_view,
        })
        # This process is root; the display and button run as the services' user.
        ctl = Path(cfg.control_endpoint("usb")[len("ipc://"):])
        own_like(ctl, cfg.hearth.run_dir)
        self._publish(UsbState.IDLE, notice or "idle")  # appliance status shows a rollback too

    # --- status ----------------------------------------------------------------------------
    def _publish(self, state: UsbState, detail: str, *, error: str | None = None,
                 counted: bool = False) -> None:
        first, total = (-1, -1)
        if self.phrase is not None:
            first, total = self.phrase.span()[0], self.phrase.total
        c = self.bus.status.counters
        counters = {USB_STATE: int(state), "phrase_first": first, "phrase_total": total,
                    UPDATE_STATE: int(self.prompt.view(time.monotonic()).state),
                    "backups_ok": int(c.get("backups_ok", 0)),
                    "backups_failed": int(c.get("backups_failed", 0))}
        if self.restored and state is UsbState.OK:
            counters[RESTORED_BOX] = int(self.restored, 16)
        if counted and state == UsbState.OK:
            counters["backups_ok"] += 1
        elif counted and state == UsbState.FAILED:
            counters["backups_failed"] += 1
        self.bus.update(phase=Phase.READY if error is None else Phase.DEGRADED, detail=detail,
                        last_error=error, counters=counters)

    def _progress(self, text: str) -> None:
        # Called from the agent's thread: hop to the loop that owns the publisher.
        self.loop.call_soon_threadsafe(self._publish, UsbState.RUNNING, text)

    # --- sticks ----------------------------------------------------------------------------
    async def handle(self, device: Path) -> Outcome:
        self.loop = asyncio.get_running_loop()
        async with self.lock:
            if self.prompt.busy or self.prompt.state is UpdateState.ASKING:
                # Not current: pulling this one out must not answer the question.
                log.info("stick %s ignored: an update is under way", device)
                return Outcome(False, "an update is under way: stick ignored", "update")
            self._cancel_clear()
            self.current = str(device)
            self.gone = None
            self.restored = None
            self._publish(UsbState.RUNNING, f"reading {device.name}")
            outcome = await asyncio.to_thread(self.agent.handle, device)
            if outcome.kind == "restore" and outcome.ok:
                self.phrase = None  # the owner already holds the restored box's phrase
                self.restored = outcome.box
            if outcome.kind == "update":
                self._offered(outcome)
                self._publish(UsbState.IDLE, outcome.message)
            elif outcome.ok:
                self._publish(UsbState.OK, outcome.message, counted=True)
            else:
                self._publish(UsbState.FAILED, outcome.message, error=outcome.message, counted=True)
            if self.gone == str(device):
                # Pulled out mid-way: show why for a while; no remove event will come.
                log.info("stick %s was pulled out while it was read", device)
                self.clear_timer = self.loop.call_later(_RESULT_AFTER_GONE_S, self._clear,
                                                        str(device))
            return outcome

    def removed(self, device: Path) -> None:
        log.info("stick %s removed", device)
        if self.lock.locked():
            self.gone = str(device)  # handled when the running attempt ends
        else:
            self._clear(str(device))

    def _cancel_clear(self) -> None:
        if self.clear_timer is not None:
            self.clear_timer.cancel()
            self.clear_timer = None

    def _clear(self, device: str) -> None:
        self.clear_timer = None
        if self.current == device and not self.lock.locked():
            self._act(self.prompt.removed())
            self.current = None
            self.gone = None
            self.restored = None
            self._publish(UsbState.IDLE, "idle")

    # --- update from a stick --------------------------------------------------------------
    def _checking(self, name: str) -> None:
        # From the agent's thread, like _progress.
        def start() -> None:
            self.prompt.checking(name)
            self._publish(UsbState.IDLE, f"checking update {name}")
        self.loop.call_soon_threadsafe(start)

    def _offered(self, outcome: Outcome) -> None:
        if outcome.offer is None:
            self.prompt.refused(outcome.message)
            log.info("update refused: %s", outcome.message)
            return
        now = time.monotonic()
        self.prompt.offered(outcome.offer, now)
        log.info("asking: %s", outcome.message)
        self.loop.call_later(self.cfg.update.prompt_timeout_s, self._tick)

    def _tick(self) -> None:
        if self._act(self.prompt.tick(time.monotonic())):
            log.info("update question timed out: nothing installed")

    def _act(self, action: Action) -> bool:
        """Carry out what the prompt decided; publish its new state. True if it acted."""
        if action is Action.DISCARD:
            clear_incoming(self.cfg)
        elif action is Action.INSTALL:
            self.installing = asyncio.ensure_future(self._install())
        elif action is Action.ACKNOWLEDGED:
            _rollback_seen(self.cfg).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(_rollback_seen(self.cfg), f"{self.rolled_back_to}\n".encode())
        c = self.bus.status.counters
        self._publish(usb_state(c) or UsbState.IDLE, self.prompt.view(time.monotonic()).headline
                      or str(self.bus.status.detail))
        return action is not Action.NONE

    async def _install(self) -> None:
        chosen = self.prompt.offer
        assert chosen is not None  # INSTALL comes only from ASKING, which holds the offer
        log.info("installing %s", chosen.bundle.path.name)

        def step(progress: Progress) -> None:  # rauc's lines, from the worker thread
            self.loop.call_soon_threadsafe(self._step, progress)

        try:
            await asyncio.to_thread(install, chosen, self.cfg.update, step)
        except BundleError as exc:
            log.error("update failed: %s", exc)
            self.prompt.failed(str(exc))
            self._publish(UsbState.IDLE, str(exc), error=str(exc))
            if self.current is None:  # the stick is already out: no remove event will clear it
                self.loop.call_later(_RESULT_AFTER_GONE_S, self._drop_failure)
            return
        finally:
            clear_incoming(self.cfg)
        self.prompt.installed()
        self._publish(UsbState.IDLE, f"update {chosen.bundle.version} installed: rebooting")
        log.info("update %s installed: rebooting into it", chosen.bundle.version)
        await asyncio.sleep(_SHOW_BEFORE_REBOOT_S)
        try:
            await asyncio.to_thread(self.rebooter.reboot)
        except (OSError, subprocess.SubprocessError) as exc:
            # Installed all the same: the new slot is tried at the next restart.
            log.error("reboot after the update failed: %s", exc)
            self._publish(UsbState.IDLE, "update installed: restart the box to finish",
                          error=f"reboot failed: {exc}")

    def _step(self, progress: Progress) -> None:
        self.prompt.progress(progress)
        self._publish(UsbState.IDLE, f"installing: {progress.percent}% {progress.step}")

    def _drop_failure(self) -> None:
        if self.prompt.state is UpdateState.FAILED:
            self._act(self.prompt.removed())

    async def cmd_update_view(self, req: UpdateView) -> UpdateViewReply:
        view = self.prompt.view(time.monotonic())
        return UpdateViewReply(state=int(view.state), headline=view.headline, detail=view.detail,
                               percent=view.percent, hint=view.hint)

    # --- control -----------------------------------------------------------------------------
    async def cmd_phrase_words(self, req: PhraseWords) -> PhraseWordsReply:
        if self.phrase is None:
            return PhraseWordsReply(words=[], first=-1, total=0)
        first, end = self.phrase.span()
        words = recovery_phrase(box_secret(self.cfg))
        return PhraseWordsReply(words=words[first:end], first=first + 1, total=len(words),
                                last=end >= len(words))

    async def cmd_phrase_press(self, req: PhrasePress) -> PhrasePressed:
        consumed, action = self.prompt.press(time.monotonic(), long=req.long)
        if consumed:
            log.info("%s press: update %s", "long" if req.long else "short", action.value)
            self._act(action)
            return PhrasePressed(consumed=True)
        if self.phrase is None or req.long:
            return PhrasePressed(consumed=False)
        if self.phrase.press():
            acknowledge(self.cfg)
            self.phrase = None
            log.info("recovery phrase acknowledged; pairing may open")
        c = self.bus.status.counters
        self._publish(usb_state(c) or UsbState.IDLE, str(self.bus.status.detail))
        return PhrasePressed(consumed=True, acknowledged=self.phrase is None)

    async def cmd_backup(self, req: UsbBackup) -> UsbBackupReply:
        device = Path(req.device)
        if not device.is_absolute() or not device.exists():
            raise ControlError(f"no device {device}")
        outcome = await self.handle(device)
        return UsbBackupReply(ok=outcome.ok, message=outcome.message, kind=outcome.kind,
                              path=outcome.path, seconds=round(outcome.seconds, 2))

    # --- udev ---------------------------------------------------------------------------------
    async def watch_udev(self) -> None:
        """React to tagged USB disks; if netlink is not available (a container), say so and
        keep serving the control socket."""
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context)
            monitor.filter_by("block")
            monitor.filter_by_tag(UDEV_TAG)
            monitor.start()
        except (ImportError, OSError) as exc:
            log.warning("no udev monitor (%s): sticks only via the control socket", exc)
            return
        queue: asyncio.Queue[tuple[str, Path]] = asyncio.Queue()

        def readable() -> None:
            while (dev := monitor.poll(timeout=0)) is not None:
                if not dev.device_node or dev.device_type != "disk":
                    continue  # partitions: the agent decides per disk
                action = str(dev.action)
                if action == "change" and dev.properties.get("DISK_MEDIA_CHANGE") == "1":
                    action = "add"  # a card put into a USB card reader
                queue.put_nowait((action, Path(dev.device_node)))

        self.loop.add_reader(monitor.fileno(), readable)
        # Sticks already in when the service starts (at first boot the restore stick is
        # plugged in before power-on; after a restart of this program): udev tagged them
        # at coldplug, and no add event will come for them.
        try:
            for dev in context.list_devices(subsystem="block", DEVTYPE="disk", tag=UDEV_TAG):
                if dev.device_node:
                    log.info("stick %s present at start", dev.device_node)
                    queue.put_nowait(("add", Path(dev.device_node)))
        except OSError as exc:  # no udev database (a container): only new sticks count
            log.warning("cannot list present sticks: %s", exc)
        try:
            while True:
                action, node = await queue.get()
                if action == "add":
                    await asyncio.sleep(self.cfg.usb.settle_s)  # partitions appear after the disk
                    asyncio.ensure_future(self.handle(node))
                elif action == "remove":
                    self.removed(node)
        finally:
            self.loop.remove_reader(monitor.fileno())

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(self.control.serve(), self.watch_udev())


def rollback_notice(cfg: Config) -> tuple[str, str]:
    """("Update to X was rolled back", X) if rauc's status says so and the owner has not
    yet pressed it away; ("", "") when not, or when rauc cannot tell (sim, a PC)."""
    try:
        report = read_report(cfg.update.rauc, running_version(), last_result=last_result_file(cfg))
    except (BundleError, OSError, ValueError) as exc:
        log.info("no update status (%s)", exc)
        return "", ""
    if report.result != "rolled-back":
        return "", ""
    with contextlib.suppress(OSError):
        if _rollback_seen(cfg).read_text().strip() == report.rolled_back_to:
            return "", ""
    log.warning("%s", report.line)
    return report.line, report.rolled_back_to


def _rollback_seen(cfg: Config) -> Path:
    return cfg.service_dir("update") / "rollback-seen"


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "usb") as bus:
        own_like(status_socket_path(cfg.hearth.run_dir, "usb"), cfg.hearth.run_dir)
        service = UsbService(cfg, bus)
        await service.run()
