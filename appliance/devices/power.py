"""Under-voltage, as the Pi's firmware reports it through Linux's hwmon.

Debian's kernel has ``raspberrypi-hwmon``: a hwmon device named ``rpi_volt`` whose
``in0_lcrit_alarm`` is 1 while the firmware sees the supply below ~4.63 V (the same bit
as ``vcgencmd get_throttled`` bit 0). The driver polls the firmware every 2 s; a dip is
often shorter than the display's refresh, so a seen alarm is kept on screen for a while.
Off a Pi there is no such device and nothing is shown. The seam is the sysfs directory
(``display.hwmon_dir``): tests point it at a directory with the same files.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["PowerMonitor", "find_rpi_volt"]

_KEEP_SHOWN_S = 600.0


def find_rpi_volt(hwmon_dir: Path) -> Path | None:
    """The ``in0_lcrit_alarm`` file of the ``rpi_volt`` hwmon device, if there is one."""
    try:
        devices = sorted(hwmon_dir.iterdir())
    except OSError:
        return None
    for device in devices:
        try:
            if (device / "name").read_text().strip() == "rpi_volt":
                alarm = device / "in0_lcrit_alarm"
                return alarm if alarm.exists() else None
        except OSError:
            continue
    return None


class PowerMonitor:
    def __init__(self, hwmon_dir: Path, keep_shown_s: float = _KEEP_SHOWN_S) -> None:
        self.alarm_file = find_rpi_volt(hwmon_dir)
        self.keep_shown_s = keep_shown_s
        self.last_alarm: float | None = None
        self.alarms = 0  # rising edges seen, for the status bus

    def under_voltage(self, now: float | None = None) -> bool:
        """True while the alarm is up and for ``keep_shown_s`` after it was last seen."""
        now = time.monotonic() if now is None else now
        if self.alarm_file is not None:
            try:
                up = self.alarm_file.read_text().strip() == "1"
            except OSError:
                up = False
            if up:
                if self.last_alarm is None or now - self.last_alarm > self.keep_shown_s:
                    self.alarms += 1
                self.last_alarm = now
        return self.last_alarm is not None and now - self.last_alarm <= self.keep_shown_s
