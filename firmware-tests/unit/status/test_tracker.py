"""appliance.status.StatusTracker: staleness and updates, on a clock the test moves."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.status import (
    Event,
    Phase,
    SchemaError,
    ServiceState,
    ServiceStatus,
    StatusTracker,
    describe_states,
    encode_status,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def msg(service: str = "node", seq: int = 1, **fields: object) -> bytes:
    return encode_status(dataclasses.replace(ServiceStatus(service), seq=seq, ts=1.0, **fields))  # type: ignore[arg-type]


def test_first_message_is_an_update_heartbeats_are_not() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, clock=clock)
    tr.watch("node")
    update = tr.feed("node", msg(phase=Phase.READY))
    assert update is not None and update.service == "node"
    assert update.state.status is not None and update.state.status.phase is Phase.READY
    assert update.state.age_s == 0 and not update.state.stale
    clock.now += 5
    assert tr.feed("node", msg(phase=Phase.READY)) is None  # same snapshot again
    assert tr.snapshot()["node"].age_s == 0
    clock.now += 1
    changed = tr.feed("node", msg(seq=2, phase=Phase.READY, counters={"height": 1}))
    assert changed is not None and changed.state.status is not None
    assert changed.state.status.counters == {"height": 1}


def test_silence_past_stale_after_is_stale_exactly_once() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, clock=clock)
    tr.watch("node")
    tr.feed("node", msg())
    clock.now += 14.5
    assert tr.expire() == [] and not tr.snapshot()["node"].stale
    assert tr.next_deadline() == clock.now + 0.5
    clock.now += 0.5
    [update] = tr.expire()  # age >= stale_after, as the display counts
    assert update.service == "node" and update.state.stale and update.state.age_s == 15
    assert update.state.status is not None  # the last state is kept, marked stale
    assert tr.expire() == [] and tr.next_deadline() is None
    # Heard again: fresh, and that is an update even with the same content.
    back = tr.feed("node", msg())
    assert back is not None and not back.state.stale


def test_snapshot_is_stale_even_without_expire() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, clock=clock)
    tr.watch("node")
    tr.feed("node", msg())
    clock.now += 60
    assert tr.snapshot()["node"].stale


def test_expected_but_never_heard_goes_stale_with_no_status() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, expected=["indexer"], clock=clock)
    assert tr.snapshot() == {"indexer": ServiceState(None, None, False)}
    clock.now += 16
    [update] = tr.expire()
    assert update.state == ServiceState(None, None, True)
    assert describe_states(tr.snapshot()) == ["indexer  no status heard (not running?)"]


def test_events_are_delivered_once_and_not_kept() -> None:
    tr = StatusTracker(clock=Clock())
    tr.watch("indexer")
    tr.feed("indexer", msg("indexer"))
    update = tr.feed("indexer", msg("indexer", seq=2, events=(Event("unknown_wallet_query", 3),)))
    assert update is not None and update.events == (Event("unknown_wallet_query", 3),)
    assert tr.snapshot()["indexer"].status.events == ()  # type: ignore[union-attr]


def test_malformed_messages_are_counted_and_do_not_count_as_alive() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, clock=clock)
    tr.watch("node")
    with pytest.raises(SchemaError):
        tr.feed("node", b"garbage")
    with pytest.raises(SchemaError, match="node.sock sent a status for 'indexer'"):
        tr.feed("node", msg("indexer"))
    with pytest.raises(SchemaError, match="one frame"):
        tr.feed_frames("node", [msg(), b"extra"])
    assert tr.stats.malformed == {"node": 3} and tr.stats.received == 0
    clock.now += 16
    assert tr.snapshot()["node"] == ServiceState(None, None, True)


def test_a_restart_is_counted() -> None:
    tr = StatusTracker(clock=Clock())
    tr.watch("node")
    tr.feed("node", msg(seq=7, phase=Phase.READY))
    update = tr.feed("node", msg(seq=1))
    assert tr.stats.restarts == 1
    assert update is not None and update.state.status is not None
    assert update.state.status.phase is Phase.STARTING


def test_unknown_service_and_bad_names() -> None:
    tr = StatusTracker()
    with pytest.raises(KeyError):
        tr.feed("node", msg())
    with pytest.raises(SchemaError):
        tr.watch("Bad/Name")
    with pytest.raises(ValueError):
        StatusTracker(stale_after=0)


def test_describe_states_lines() -> None:
    clock = Clock()
    tr = StatusTracker(stale_after=15, expected=["node"], clock=clock)
    tr.watch("indexer")
    tr.feed("indexer", msg("indexer", phase=Phase.BACKFILLING, progress=0.5, eta_s=120.0,
                           detail="wallet 1a2b", last_error="bitcoind: timeout"))
    clock.now += 20
    lines = describe_states(tr.snapshot())
    assert lines[0].startswith("indexer  STALE, last heard 20 s ago: backfilling 50% (eta 2 min): "
                               "wallet 1a2b; last error")
    assert lines[0].endswith("bitcoind: timeout")
    assert lines[1] == "node     no status heard (not running?)"
    as_json = tr.snapshot()["indexer"].as_dict()
    assert as_json["stale"] is True and as_json["age_s"] == 20.0
    assert as_json["status"]["phase"] == "backfilling"
