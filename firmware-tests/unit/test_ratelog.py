"""appliance.ratelog: a flood of one event logs a bounded number of lines."""

from __future__ import annotations

import logging

import pytest

from appliance.ratelog import RateLimitedLog


def test_RateLimitedLog_logs_a_burst_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), "refused handshakes", burst=3,
                             interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for i in range(1000):
            limited("refused %d", i)
        assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1",
                                                             "refused 2"]
        assert limited.suppressed == 997
        now[0] = 61.0
        limited("refused again")
    assert [r.getMessage() for r in caplog.records][3:] == [
        "997 more refused handshakes in the last 61 s (not logged)", "refused again"]
