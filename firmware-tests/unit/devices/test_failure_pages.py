"""The OLED pages for issue 12's failures: a full disk, a program that keeps failing."""

from __future__ import annotations

from appliance.control.messages import Payload
from appliance.devices.pages import PANEL_128X64, ErrorPage, render
from appliance.display.service import choose_page
from appliance.status import Phase, ServiceState, ServiceStatus


def state(service: str, phase: Phase, *, detail: str = "",
          counters: dict[str, int | float] | None = None) -> ServiceState:
    return ServiceState(ServiceStatus(service, phase, detail=detail, counters=counters or {}),
                        0.5, False)


def test_disk_full_page_beats_service_down_and_pairing() -> None:
    states = {"node": state("node", Phase.READY),
              "tower": state("tower", Phase.DEGRADED, counters={"disk_full": 1}),
              "backup": state("backup", Phase.DEGRADED, counters={"disk_full": 1}),
              "supervisor": state("supervisor", Phase.DEGRADED, detail="bitcoind FATAL")}
    page, _, _ = choose_page(states, Payload("HEARTH:X"), 0.0)
    assert page == ErrorPage.disk_full(["tower", "backup"])
    assert page.title == "Disk full" and "tower and backup" in page.detail
    assert render(page, PANEL_128X64).getbbox() is not None
    states["tower"] = state("tower", Phase.READY, counters={"disk_full": 0})
    states["backup"] = state("backup", Phase.READY, counters={"disk_full": 0})
    page, _, _ = choose_page(states, None, 0.0)
    assert isinstance(page, ErrorPage) and page.title == "Service down"


def test_failing_program_page_names_it_and_its_last_error() -> None:
    detail = ("hearth-tower FATAL, retry in 40 s: OSError: [Errno 28] No space left on device; "
              "6 of 7 programs running")
    page, _, _ = choose_page({"supervisor": state("supervisor", Phase.DEGRADED, detail=detail)},
                             None, 0.0)
    assert isinstance(page, ErrorPage) and "hearth-tower" in page.detail
    assert "No space left" in page.detail
