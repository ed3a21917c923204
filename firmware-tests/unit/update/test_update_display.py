"""Where the update pages come in the display's order of pages."""

from __future__ import annotations

from appliance.control.messages import Payload, UpdateViewReply
from appliance.devices.pages import ErrorPage, PairingPage, SyncPage, UpdatePage
from appliance.display.service import _countdown, choose_page
from appliance.status import Phase, ServiceState, ServiceStatus
from appliance.status.fields import UpdateState


def state(service: str, phase: Phase, **counters: int) -> ServiceState:
    return ServiceState(ServiceStatus(service, phase, counters=dict(counters)), 0.5, False)


NODE = state("node", Phase.READY, blocks=10, headers=10, peers=3)
BROKEN = {"node": NODE, "indexer": ServiceState(ServiceStatus("indexer", Phase.ERROR,
                                                              last_error="boom"), 0.5, False)}
ASKING = UpdateViewReply(int(UpdateState.ASKING), "0.1.0 -> 0.1.1?", "Press to install", -1, "Hold: no")
REFUSED = UpdateViewReply(int(UpdateState.REFUSED), "Update refused", "Bad signature", -1, "")
ROLLED = UpdateViewReply(int(UpdateState.ROLLED_BACK), "Update rolled back",
                         "Update to 0.1.1 was rolled back", -1, "Press: OK")


def test_a_question_or_an_install_comes_before_everything_but_power() -> None:
    page, _, _ = choose_page(BROKEN, Payload("HEARTH:X"), 0.0, update=ASKING)
    assert page == UpdatePage("0.1.0 -> 0.1.1?", "Press to install", -1, "Hold: no")
    page, _, _ = choose_page(BROKEN, None, 0.0, update=REFUSED)
    assert isinstance(page, UpdatePage) and page.alert
    page, _, _ = choose_page(BROKEN, None, 0.0, update=ASKING, under_voltage=True)
    assert isinstance(page, ErrorPage) and page.title == "Under-voltage"


def test_a_rollback_waits_behind_pairing_and_errors_but_beats_the_sync_page() -> None:
    page, _, _ = choose_page({"node": NODE}, None, 0.0, update=ROLLED)
    assert isinstance(page, UpdatePage) and page.alert and "rolled back" in page.detail
    page, _, _ = choose_page({"node": NODE}, Payload("HEARTH:X"), 0.0, update=ROLLED)
    assert isinstance(page, PairingPage)
    page, _, _ = choose_page(BROKEN, None, 0.0, update=ROLLED)
    assert isinstance(page, ErrorPage)
    idle = UpdateViewReply(int(UpdateState.IDLE))
    assert isinstance(choose_page({"node": NODE}, None, 0.0, update=idle)[0], SyncPage)


def test_holding_the_button_while_asked_says_no_not_reset_pairing() -> None:
    states = {"button": state("button", Phase.READY, countdown=2)}
    overlay = _countdown(states, "say no")
    assert overlay is not None and (overlay.seconds_left, overlay.action) == (2, "say no")
    assert _countdown({"button": state("button", Phase.READY, countdown=-1)}) is None
