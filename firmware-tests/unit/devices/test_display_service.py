"""The display service's choice of page from the status bus."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from appliance import __version__, cli
from appliance.config import Config, load_config
from appliance.control.messages import Payload
from appliance.devices.pages import BootPage, ErrorPage, IndexPage, PairingPage, SyncPage, render
from appliance.display.service import choose_page, show_step
from appliance.status import Phase, ServiceState, ServiceStatus


def state(service: str, phase: Phase, *, stale: bool = False, detail: str = "",
          counters: dict[str, int | float] | None = None) -> ServiceState:
    return ServiceState(ServiceStatus(service, phase, detail=detail, counters=counters or {}),
                        16.0 if stale else 0.5, stale)


def test_sync_page_when_all_is_well() -> None:
    page, _, stale = choose_page({"node": state("node", Phase.READY, counters={
        "blocks": 10, "headers": 10, "peers": 3}), "indexer": state("indexer", Phase.READY)},
        None, 0.0)
    assert isinstance(page, SyncPage) and page.synced and not stale


def test_stale_service_is_an_error_not_fine() -> None:
    page, _, stale = choose_page({"node": state("node", Phase.READY, stale=True)}, None, 0.0)
    assert isinstance(page, ErrorPage) and "node" in page.title and stale


def test_supervisor_fatal_beats_pairing() -> None:
    states = {"node": state("node", Phase.READY),
              "supervisor": state("supervisor", Phase.DEGRADED, detail="hearth-tower FATAL")}
    page, _, _ = choose_page(states, Payload("HEARTH:X"), 0.0)
    assert isinstance(page, ErrorPage) and "hearth-tower" in page.detail


def test_pairing_alternates_with_the_tls_server() -> None:
    pairing = Payload("HEARTH:X", tls_server="10.0.0.2:50002:s",
                      tls_fingerprint="AB:CD:EF:01:23")
    first, _, _ = choose_page({}, pairing, 0.0, now=0.0)
    second, _, _ = choose_page({}, pairing, 0.0, now=7.0)
    assert isinstance(first, PairingPage) and first.payload == "HEARTH:X"
    assert isinstance(second, PairingPage) and second.text_mode
    assert second.payload == "10.0.0.2:50002:s" and "AB:CD:EF:01" in second.caption


def test_backfill_progress_page() -> None:
    page, _, _ = choose_page({"indexer": state("indexer", Phase.BACKFILLING, detail="w1",
                                               counters={"backfill_done": 5,
                                                         "backfill_total": 10})}, None, 0.0)
    assert isinstance(page, IndexPage) and page.fraction == 0.5


def test_recent_breach_shows_the_watchtower_page_until_a_day_passes() -> None:
    import time

    from appliance.devices.pages import WatchtowerPage
    from appliance.status.fields import txid_counter

    node = state("node", Phase.READY, counters={"blocks": 10, "headers": 10})
    sent = state("tower", Phase.READY, detail="breach 4f56d56c393466b7 penalty sent",
                 counters={"last_breach_ts": time.time() - 5, "last_breach_stopped": 0,
                           "last_breach_txid": txid_counter("4f56d56c393466b7")})
    page, _, _ = choose_page({"node": node, "tower": sent}, None, 0.0)
    assert isinstance(page, WatchtowerPage) and page.headline == "Breach! Penalty sent"
    assert page.detail == "tx 4f56d56c3934"
    stopped = state("tower", Phase.READY, detail="breach 4f56d56c393466b7 stopped",
                    counters={"last_breach_ts": time.time() - 5, "last_breach_stopped": 1})
    page, _, _ = choose_page({"node": node, "tower": stopped}, None, 0.0)
    assert isinstance(page, WatchtowerPage) and page.headline == "Breach stopped"
    old = state("tower", Phase.READY, detail="breach 4f56d56c393466b7 stopped",
                counters={"last_breach_ts": time.time() - 2 * 86400, "last_breach_stopped": 1})
    page, _, _ = choose_page({"node": node, "tower": old}, None, 0.0)
    assert isinstance(page, SyncPage)


# --- show_step: the panel before supervisord starts the service ---------------------

def _display_config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "hearth.toml"
    path.write_text('[hearth]\nnetwork = "regtest"\n' + body)
    return load_config(path, env={})


def test_first_boot_step_is_drawn_and_left_lit(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    cfg = _display_config(tmp_path, f'[display]\nsimulate = true\nframes_dir = "{frames}"\n')
    saved = show_step(cfg, "First boot", "Making the box's keys")
    assert saved is not None and saved.name == "frame-000001.png"
    expected = render(BootPage("First boot", detail="Making the box's keys", version=__version__))
    assert Image.open(saved).convert("1").tobytes() == expected.tobytes()
    # The display service started later numbers its frames after the first-boot ones.
    assert show_step(cfg, "First boot", "Starting services") == frames / "frame-000002.png"


def test_step_without_a_panel_is_a_clear_error_not_a_crash(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "hearth.toml"
    cfg_path.write_text('[hearth]\nnetwork = "regtest"\n[display]\ni2c_port = 97\n')
    assert cli.main(["display", "step", "First boot", "--config", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert "/dev/i2c-97" in err and "i2cdetect" in err


def test_pairing_shows_the_setup_link_with_the_fingerprint_start() -> None:
    pairing = Payload("HEARTH:X", setup_url="HTTPS://10.0.0.2:8443/P/ABCDEFGHIJKLM",
                      tls_server="10.0.0.2:50002:s", tls_fingerprint="AB:CD:EF:01:23")
    first, _, _ = choose_page({}, pairing, 0.0, now=0.0)
    assert isinstance(first, PairingPage) and first.payload == pairing.setup_url
    assert not first.text_mode and first.caption == "Cert ABCD EF01"
    render(first)  # fits a version <= 3 code on the panel


def test_unknown_wallet_leads_to_the_button_until_pairing_opens() -> None:
    from appliance.display.service import _UnknownWallets

    unknown = _UnknownWallets()

    def idx(queries: int, pairing_open: int = 0) -> dict[str, ServiceState]:
        return {"indexer": state("indexer", Phase.READY, counters={
            "unknown_script_queries": queries, "pairing_open": pairing_open})}
    assert not unknown.recent(idx(3), now=100.0)  # what happened before we started
    assert unknown.recent(idx(4), now=101.0)
    page, _, _ = choose_page(idx(4), None, 0.0, unknown_wallet=True)
    assert isinstance(page, ErrorPage) and page.title == "Unknown wallet"
    assert "Press the button" in page.detail
    assert unknown.recent(idx(4), now=500.0) and not unknown.recent(idx(4), now=800.0)
    assert unknown.recent(idx(5), now=801.0)
    assert not unknown.recent(idx(5, pairing_open=1), now=802.0)  # the press was made


def test_node_page_shows_tors_bootstrap_then_ready() -> None:
    node = state("node", Phase.READY, counters={"blocks": 10, "headers": 10, "peers": 3})
    for counters, line in (({"tor_bootstrap": 45}, "Tor: 45%"), ({"tor_bootstrap": 100}, "Tor: ready"),
                           ({"tor_bootstrap": -1}, "")):
        page, _, _ = choose_page({"node": node, "tor": state("tor", Phase.READY, counters=counters)},
                                 None, 0.0)
        assert isinstance(page, SyncPage) and page.note == line
    page, _, _ = choose_page({"node": node, "tor": state("tor", Phase.SYNCING, stale=True,
                                                         counters={"tor_bootstrap": 100})}, None, 0.0)
    assert isinstance(page, SyncPage) and page.note == ""  # silent: no stale "ready"
