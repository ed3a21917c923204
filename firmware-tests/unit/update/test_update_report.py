"""The update status read from rauc's JSON (shapes as rauc 1.8 prints them; the real
service's output is checked in functional/test_update_install.py) and rauc's progress."""

from __future__ import annotations

from typing import Any

from appliance.update.install import Progress, parse_progress
from appliance.update.report import report_from

INSTALLED = 1_800_000_000.0
AT = "2027-01-15T08:00:00Z"  # 1_800_000_000


def status(*, primary: str, b_status: str, b_version: str | None, a_version: str | None = None
           ) -> dict[str, Any]:
    def slot(bootname: str, state: str, boot: str, version: str | None) -> dict[str, Any]:
        detail: dict[str, Any] = {"bundle": {"compatible": None}}
        if version:
            detail = {"bundle": {"compatible": "hearth-arm64", "version": version},
                      "installed": {"timestamp": AT, "count": 1}, "status": "ok"}
        return {"class": "rootfs", "bootname": bootname, "state": state, "boot_status": boot,
                "slot_status": detail}
    return {"compatible": "hearth-arm64", "booted": "A", "boot_primary": primary,
            "slots": [{"rootfs.1": slot("B", "inactive", b_status, b_version)},
                      {"rootfs.0": slot("A", "booted", "good", a_version)}]}


def test_rolled_back_when_the_other_slot_is_bad_newer_and_older_than_this_boot() -> None:
    r = report_from(status(primary="rootfs.0", b_status="bad", b_version="0.1.1"), "0.1.0",
                    booted_at=INSTALLED + 60)
    assert (r.result, r.rolled_back_to, r.line) == ("rolled-back", "0.1.1",
                                                     "Update to 0.1.1 was rolled back")


def test_installed_this_boot_is_pending_even_with_a_tryboot_backend() -> None:
    # A tryboot backend keeps A primary until the try; the write time tells it apart.
    r = report_from(status(primary="rootfs.0", b_status="bad", b_version="0.1.1"), "0.1.0",
                    booted_at=INSTALLED - 3600)
    assert r.result == "pending" and r.line == "Update to 0.1.1 installed: reboot to finish"


def test_an_older_bad_slot_is_no_rollback() -> None:
    # The previous version left in the other slot after an update that worked.
    r = report_from(status(primary="rootfs.0", b_status="bad", b_version="0.0.9", a_version="0.1.0"),
                    "0.1.0", booted_at=INSTALLED + 60)
    assert (r.result, r.line) == ("updated", "Hearth 0.1.0")
    fresh = report_from(status(primary="rootfs.0", b_status="good", b_version=None), "0.1.0",
                        booted_at=INSTALLED)
    assert fresh.result == "none" and fresh.other is not None and fresh.other.version == ""


def test_last_result_file_adds_the_reason() -> None:
    r = report_from(status(primary="rootfs.0", b_status="bad", b_version="0.1.1"), "0.1.0",
                    INSTALLED + 60, {"from": "0.1.0", "to": "0.1.1", "result": "rolled-back",
                                     "reason": "hearth-indexer not RUNNING"})
    assert r.line == "Update to 0.1.1 was rolled back (hearth-indexer not RUNNING)"


def test_progress_lines() -> None:
    assert parse_progress(" 40% Checking bundle done.") == Progress(40, "Checking bundle done.")
    assert parse_progress("100% Installing done.") == Progress(100, "Installing done.")
    assert parse_progress("LastError: x") is None and parse_progress("installing") is None
