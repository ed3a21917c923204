"""The stick's update question as a state machine: only a short press inside the timeout
installs; a long press, the timeout or pulling the stick drops the verified copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.status.fields import UpdateState
from appliance.update.bundle import BundleInfo
from appliance.update.install import Offer, Progress
from appliance.update.prompt import Action, UpdatePrompt

OFFER = Offer(BundleInfo(Path("/x/hearth-0.1.1-arm64.raucb"), "hearth-arm64", "0.1.1", ("rootfs",)),
              "0.1.0")


def asking(now: float = 100.0) -> UpdatePrompt:
    p = UpdatePrompt(timeout=60)
    p.checking("hearth-0.1.1-arm64.raucb")
    assert p.busy and p.view(now).headline == "Checking update"
    p.offered(OFFER, now)
    return p


def test_short_press_installs_with_progress_then_reboots() -> None:
    p = asking()
    view = p.view(100.0)
    assert (view.state, view.headline, view.detail, view.hint) == (
        UpdateState.ASKING, "0.1.0 -> 0.1.1?", "Press to install", "Hold or wait 60s: no")
    assert p.view(130.2).hint == "Hold or wait 30s: no"
    assert p.press(110.0) == (True, Action.INSTALL)
    p.progress(Progress(40, "Checking bundle done."))
    p.progress(Progress(20, "late line"))  # never backwards
    view = p.view(111.0)
    assert (view.state, view.headline, view.percent) == (UpdateState.INSTALLING, "Installing 0.1.1", 40)
    assert p.removed() is Action.NONE and p.state is UpdateState.INSTALLING  # the copy is on the box
    assert p.press(112.0) == (False, Action.NONE)  # presses mean nothing meanwhile
    p.installed()
    assert p.view(113.0).detail == "Restarting into 0.1.1"


@pytest.mark.parametrize("how", ["long", "timeout", "late press", "removed"])
def test_no_yes_means_nothing_happens(how: str) -> None:
    p = asking()
    if how == "long":
        assert p.press(101.0, long=True) == (True, Action.DISCARD)
    elif how == "timeout":
        assert p.tick(159.9) is Action.NONE and p.state is UpdateState.ASKING
        assert p.tick(160.0) is Action.DISCARD
    elif how == "late press":  # the timer had not fired yet
        assert p.press(160.5) == (True, Action.DISCARD)
    else:
        assert p.removed() is Action.DISCARD
    assert p.state is UpdateState.IDLE and p.offer is None
    assert p.view(200.0).state is UpdateState.IDLE
    assert p.press(201.0) == (False, Action.NONE)  # the next press is the button's again


def test_refused_and_failed_show_why_until_the_stick_goes() -> None:
    p = UpdatePrompt(timeout=60)
    p.checking("x.raucb")
    p.refused("Bad signature: x.raucb is not from Hearth's key")
    view = p.view(0)
    assert (view.state, view.headline, view.hint) == (UpdateState.REFUSED, "Update refused",
                                                      "Nothing was changed")
    assert p.press(1.0) == (False, Action.NONE)
    assert p.removed() is Action.NONE and p.state is UpdateState.IDLE
    p = asking()
    p.press(101.0)
    p.failed("Install failed: No space left on device")
    assert p.view(102.0).headline == "Update failed" and not p.busy


def test_rollback_notice_until_a_short_press() -> None:
    p = UpdatePrompt(timeout=60, rolled_back="Update to 0.1.1 was rolled back")
    view = p.view(0)
    assert (view.state, view.detail) == (UpdateState.ROLLED_BACK, "Update to 0.1.1 was rolled back")
    assert p.press(1.0, long=True) == (False, Action.NONE)  # a long press stays the button's
    assert p.press(2.0) == (True, Action.ACKNOWLEDGED)
    assert p.view(3.0).state is UpdateState.IDLE
