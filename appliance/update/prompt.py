"""The question a stick with an update puts on the OLED, as a pure state machine.

::

    IDLE --stick--> CHECKING --verified--> ASKING --short press--> INSTALLING --> REBOOTING
                        |                    |  long press, timeout,              |
                        +--refused--> REFUSED   stick out: back to IDLE           +--> FAILED
    (a rollback notice, ROLLED_BACK, shows while IDLE until a short press)

No clock, no I/O: the caller passes ``now`` and acts on the returned :class:`Action`
(the usb service runs the install, deletes the copied bundle, reboots). Only a verified
bundle is ever asked about, and nothing is installed without a short press inside the
timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..status.fields import UpdateState
from .install import Offer, Progress

__all__ = ["Action", "PromptView", "UpdatePrompt"]


class Action(Enum):
    NONE = "none"
    INSTALL = "install"  # start installing the offer
    DISCARD = "discard"  # drop the copied bundle: it will not be installed
    ACKNOWLEDGED = "acknowledged"  # the owner saw the rollback notice


@dataclass(frozen=True)
class PromptView:
    """What the OLED shows for the current state (``update.view`` on usb.ctl)."""

    state: UpdateState
    headline: str = ""
    detail: str = ""
    percent: int = -1  # 0..100 while installing
    hint: str = ""


class UpdatePrompt:
    def __init__(self, timeout: float, rolled_back: str = "") -> None:
        self.timeout = timeout
        self.rolled_back = rolled_back  # "Update to X was rolled back" until acknowledged
        self.state = UpdateState.IDLE
        self.offer: Offer | None = None
        self.deadline = 0.0
        self.text = ""  # the bundle's name, a refusal's reason, or the install's step
        self.percent = -1

    @property
    def busy(self) -> bool:
        """A bundle is being checked or installed: the stick's other jobs wait."""
        return self.state in (UpdateState.CHECKING, UpdateState.INSTALLING, UpdateState.REBOOTING)

    # --- events ------------------------------------------------------------------------
    def checking(self, name: str) -> None:
        self._go(UpdateState.CHECKING, name)

    def offered(self, offer: Offer, now: float) -> None:
        self._go(UpdateState.ASKING, "")
        self.offer, self.deadline = offer, now + self.timeout

    def refused(self, reason: str) -> None:
        self._go(UpdateState.REFUSED, reason)

    def press(self, now: float, *, long: bool = False) -> tuple[bool, Action]:
        """(consumed, action): a press the prompt does not want is the button's as ever."""
        if self.state is UpdateState.ASKING:
            if long or now >= self.deadline:
                self._go(UpdateState.IDLE, "")
                return True, Action.DISCARD
            self._go(UpdateState.INSTALLING, "starting")
            self.percent = 0
            return True, Action.INSTALL
        if self.state is UpdateState.IDLE and self.rolled_back and not long:
            self.rolled_back = ""
            return True, Action.ACKNOWLEDGED
        return False, Action.NONE

    def tick(self, now: float) -> Action:
        if self.state is UpdateState.ASKING and now >= self.deadline:
            self._go(UpdateState.IDLE, "")
            return Action.DISCARD
        return Action.NONE

    def progress(self, step: Progress) -> None:
        if self.state is UpdateState.INSTALLING:
            self.percent, self.text = max(self.percent, step.percent), step.step

    def installed(self) -> None:
        self._go(UpdateState.REBOOTING, "")

    def failed(self, reason: str) -> None:
        self._go(UpdateState.FAILED, reason)

    def removed(self) -> Action:
        """The stick came out: a question or a message about it goes away; an install
        goes on (it reads the copy on the box, not the stick)."""
        if self.busy:
            return Action.NONE
        asking = self.state is UpdateState.ASKING
        self._go(UpdateState.IDLE, "")
        return Action.DISCARD if asking else Action.NONE

    # --- what to show --------------------------------------------------------------------
    def view(self, now: float) -> PromptView:
        state = self.state
        if state is UpdateState.CHECKING:
            return PromptView(state, "Checking update", self.text, hint="Do not unplug")
        if state is UpdateState.ASKING and self.offer is not None:
            left = max(0, int(self.deadline - now + 0.999))
            # The page's title says "Update": the line under it fits 128 px unwrapped.
            return PromptView(state, f"{self.offer.running} -> {self.offer.bundle.version}?",
                              "Press to install",
                              hint=f"Hold or wait {left}s: no")
        if state is UpdateState.INSTALLING:
            to = self.offer.bundle.version if self.offer else ""
            return PromptView(state, f"Installing {to}", self.text, self.percent, "Do not unplug power")
        if state is UpdateState.REBOOTING:
            to = self.offer.bundle.version if self.offer else ""
            return PromptView(state, "Update installed", f"Restarting into {to}", 100)
        if state is UpdateState.REFUSED:
            return PromptView(state, "Update refused", self.text, hint="Nothing was changed")
        if state is UpdateState.FAILED:
            return PromptView(state, "Update failed", self.text, hint="Still running the old one")
        if self.rolled_back:
            return PromptView(UpdateState.ROLLED_BACK, "Update rolled back", self.rolled_back,
                              hint="Press: OK")
        return PromptView(UpdateState.IDLE)

    def _go(self, state: UpdateState, text: str) -> None:
        self.state, self.text = state, text
        if state in (UpdateState.IDLE, UpdateState.REFUSED):
            self.offer = None
        if state is not UpdateState.INSTALLING:
            self.percent = -1
