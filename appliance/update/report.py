"""Where the box stands with updates, from ``rauc status --detailed --output-format=json``.

No file of our own is needed to tell a rollback: the slot we did not boot says it.

* **rolled back to X**: the other slot is marked ``bad``, holds a bundle *newer* than the
  running version, and was written before this boot (the try boot failed its health
  check, or never came up, and the firmware booted this slot again);
* **installed, reboot to finish**: the other slot is the boot primary, or was written
  during this boot (a tryboot backend keeps the running slot primary until the try);
* otherwise nothing pending (``updated`` when this slot was itself installed by rauc).

If the image side left ``last-result.json`` ({"from", "to", "result", "reason"}), its
reason is added to the rollback line.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config
from .bundle import RaucMissing, compare_versions

__all__ = ["Report", "SlotInfo", "boot_time", "last_result_file", "read_report", "report_from"]


@dataclass(frozen=True)
class SlotInfo:
    name: str  # rootfs.0
    bootname: str  # A
    state: str  # booted | inactive | active
    boot_status: str  # good | bad | ""
    version: str  # the bundle rauc last wrote into it ("" if never)
    installed_at: float | None  # epoch seconds of that write


@dataclass(frozen=True)
class Report:
    running: str
    booted: SlotInfo | None
    other: SlotInfo | None
    primary: str  # the slot the next normal boot uses
    result: str  # none | pending | rolled-back | updated
    rolled_back_to: str = ""  # the version that was given up
    reason: str = ""  # from last-result.json, when the image side wrote one

    @property
    def line(self) -> str:
        """One sentence for ``appliance update status`` and the OLED."""
        if self.result == "rolled-back":
            why = f" ({self.reason})" if self.reason else ""
            return f"Update to {self.rolled_back_to} was rolled back{why}"
        if self.result == "pending" and self.other is not None:
            return f"Update to {self.other.version} installed: reboot to finish"
        return f"Hearth {self.running}"


def last_result_file(cfg: Config) -> Path:
    """Written by the image side's health check after a try boot, if at all."""
    return cfg.service_dir("update") / "last-result.json"


def boot_time() -> float:
    """When this boot began (epoch seconds), from the kernel's ``btime``."""
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def read_report(rauc: str, running: str, *, booted_at: float | None = None,
                last_result: Path | None = None) -> Report:
    try:
        done = subprocess.run([rauc, "status", "--detailed", "--output-format=json"],
                              capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise RaucMissing("rauc is not installed") from None
    if done.returncode != 0:
        raise OSError(f"rauc status failed: {done.stderr.strip()[-200:]}")
    extra: dict[str, Any] = {}
    if last_result is not None:
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(last_result.read_text())
            extra = loaded if isinstance(loaded, dict) else {}
    return report_from(json.loads(done.stdout), running,
                       boot_time() if booted_at is None else booted_at, extra)


def report_from(status: dict[str, Any], running: str, booted_at: float,
                last_result: dict[str, Any] | None = None) -> Report:
    slots = [_slot(name, body) for entry in status.get("slots") or [] for name, body in entry.items()
             if str(body.get("class")) == "rootfs"]
    booted_name = str(status.get("booted") or "")
    booted = next((s for s in slots if s.bootname == booted_name or s.state == "booted"), None)
    other = next((s for s in slots if s is not booted), None)
    primary = str(status.get("boot_primary") or "")
    result, to = "none", ""
    if other is not None and other.version:
        written_now = other.installed_at is not None and other.installed_at >= booted_at
        if primary == other.name or written_now:
            result = "pending"
        elif other.boot_status == "bad" and _newer(other.version, running):
            result, to = "rolled-back", other.version
    if result == "none" and booted is not None and booted.version:
        result = "updated"
    reason = ""
    if last_result and last_result.get("result") in ("rolled-back", "rolled back", "rollback"):
        to = to or str(last_result.get("to") or "")
        result = "rolled-back" if to else result
        reason = str(last_result.get("reason") or "")[:80]
    return Report(running, booted, other, primary, result, to, reason)


def _newer(version: str, running: str) -> bool:
    try:
        return compare_versions(version, running) > 0
    except ValueError:
        return False


def _slot(name: str, body: dict[str, Any]) -> SlotInfo:
    detail = body.get("slot_status") or {}
    bundle = detail.get("bundle") or {}
    installed = (detail.get("installed") or {}).get("timestamp")
    when = None
    if installed:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(str(installed).replace("Z", "+00:00")).timestamp()
    return SlotInfo(name, str(body.get("bootname") or ""), str(body.get("state") or ""),
                    str(body.get("boot_status") or ""), str(bundle.get("version") or ""), when)
