"""A fresh card whose hearth.toml is refused, then fixed, then a power cut during first
boot (the scenario: firstboot.py), on its own VM beside the shared box.

The scenario needs nothing from the shared box, so it runs in a thread of its own while
the card-wear test measures the shared box: that test mostly waits (its phases are paced
by the wall clock), and what it measures are the shared card's bytes, which another VM
does not touch. This test collects the scenario's result; run alone (``-k``) it runs it
there and then. It saves the whole run about six minutes of boots.
"""

from __future__ import annotations

import pytest

from .firstboot import Scenario

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_refused_config_then_power_cut_during_first_boot(first_boot_config: Scenario) -> None:
    for line in first_boot_config.result():
        print(line)
