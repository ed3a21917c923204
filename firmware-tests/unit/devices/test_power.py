"""Under-voltage from a sysfs tree laid out as raspberrypi-hwmon's (the seam: the
directory; the reading code is the one the box runs)."""

from __future__ import annotations

from pathlib import Path

from appliance.control.messages import Payload
from appliance.devices.pages import ErrorPage
from appliance.devices.power import PowerMonitor, find_rpi_volt
from appliance.display.service import choose_page


def hwmon(tmp_path: Path, alarm: str = "0") -> Path:
    root = tmp_path / "hwmon"
    (root / "hwmon0").mkdir(parents=True)
    (root / "hwmon0" / "name").write_text("cpu_thermal\n")
    (root / "hwmon1").mkdir()
    (root / "hwmon1" / "name").write_text("rpi_volt\n")
    (root / "hwmon1" / "in0_lcrit_alarm").write_text(alarm + "\n")
    return root


def test_finds_the_rpi_volt_device(tmp_path: Path) -> None:
    root = hwmon(tmp_path)
    assert find_rpi_volt(root) == root / "hwmon1" / "in0_lcrit_alarm"
    assert find_rpi_volt(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert find_rpi_volt(tmp_path / "empty") is None


def test_alarm_is_shown_while_up_and_ten_minutes_after(tmp_path: Path) -> None:
    root = hwmon(tmp_path)
    monitor = PowerMonitor(root)
    assert not monitor.under_voltage(now=0.0)
    (root / "hwmon1" / "in0_lcrit_alarm").write_text("1\n")
    assert monitor.under_voltage(now=1.0)
    (root / "hwmon1" / "in0_lcrit_alarm").write_text("0\n")
    assert monitor.under_voltage(now=500.0)  # a dip between two refreshes stays visible
    assert not monitor.under_voltage(now=700.0)
    assert monitor.alarms == 1


def test_off_a_pi_nothing_is_shown(tmp_path: Path) -> None:
    assert not PowerMonitor(tmp_path / "nothing").under_voltage()


def test_under_voltage_page_beats_everything() -> None:
    page, _, _ = choose_page({}, Payload("HEARTH:X"), 0.0, under_voltage=True)
    assert isinstance(page, ErrorPage) and page.title == "Under-voltage"


def test_disk_nearly_full_page() -> None:
    from appliance.status import Phase, ServiceState, ServiceStatus

    node = ServiceState(ServiceStatus("node", Phase.READY, counters={
        "blocks": 5, "headers": 5, "disk_free_bytes": 300 << 20}), 0.5, False)
    page, _, _ = choose_page({"node": node}, None, 0.0)
    assert isinstance(page, ErrorPage) and page.title == "Disk nearly full"
    assert "300" in page.detail
