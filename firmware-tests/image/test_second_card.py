"""The second card's steps (secondcard.py says what each does and why they run in a thread
beside the shared box), one test each, collected after every test of the shared box."""

from __future__ import annotations

import pytest

from .secondcard import FIRST_BOOT, INSTALL_CUT, ROLLBACK, SecondCard

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(3600)]


def test_refused_config_then_power_cut_during_first_boot(second_card: SecondCard) -> None:
    for line in second_card.result(FIRST_BOOT):
        print(line)


def test_power_cut_during_install_boots_the_old_slot(second_card: SecondCard) -> None:
    for line in second_card.result(INSTALL_CUT):
        print(line)


def test_failed_update_rolls_back(second_card: SecondCard) -> None:
    for line in second_card.result(ROLLBACK):
        print(line)
