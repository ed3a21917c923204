"""appliance.status.StatusPublisher over real ZMQ ipc sockets: binding, rate, heartbeat, never blocking."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from appliance.status import (
    Event,
    Phase,
    SchemaError,
    ServiceStatus,
    StatusPublisher,
    decode_status,
    status_socket_path,
)

from .util import RawSub, Timings, run


def test_binds_a_private_socket_replacing_a_stale_file(run_dir: Path) -> None:
    path = status_socket_path(run_dir, "indexer")
    path.parent.mkdir(mode=0o755)
    path.parent.chmod(0o755)
    # What a kill -9 leaves behind: a socket file nobody listens on.
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))
    pub = StatusPublisher(run_dir, "indexer")
    try:
        assert pub.endpoint == f"ipc://{run_dir}/status/indexer.sock"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # tightened
    finally:
        pub.close()
    assert not path.exists()  # a clean stop leaves nothing behind


def test_close_leaves_a_newer_instances_socket_alone(run_dir: Path) -> None:
    old = StatusPublisher(run_dir, "node")
    new = StatusPublisher(run_dir, "node")  # took the path over
    try:
        old.close()
        assert new.path.exists()
    finally:
        new.close()
    assert not new.path.exists()


def test_names_and_paths_are_checked(run_dir: Path) -> None:
    for bad in ("../etc", "Indexer", "", "a" * 33, "x.y"):
        with pytest.raises(SchemaError):
            StatusPublisher(run_dir, bad)
    long_dir = run_dir / ("d" * 90)
    with pytest.raises(ValueError, match="over the 107-byte unix socket limit"):
        StatusPublisher(long_dir, "indexer")
    with pytest.raises(ValueError, match="heartbeat_s must be at least one rate-limit interval"):
        StatusPublisher(run_dir, "node", heartbeat_s=0.05, max_rate=10)
    with pytest.raises(SchemaError, match="this publisher is 'node'"):
        StatusPublisher(run_dir, "node", initial=ServiceStatus("indexer"))


def test_nothing_is_sent_before_start_and_close_is_idempotent(run_dir: Path) -> None:
    pub = StatusPublisher(run_dir, "node")
    pub.update(phase=Phase.READY)
    assert pub.stats.fresh == 0
    pub.close()
    pub.close()
    pub.update(phase=Phase.ERROR)  # after close: ignored, not an error
    with pytest.raises(RuntimeError):
        run(_start(pub))


async def _start(pub: StatusPublisher) -> None:
    pub.start()


def test_never_blocks_when_nobody_listens(run_dir: Path) -> None:
    async def main() -> None:
        # No rate limit to speak of: every publish really goes to the socket.
        async with StatusPublisher(run_dir, "indexer", max_rate=1e9) as pub:
            started = time.monotonic()
            for i in range(10_000):
                pub.update(counters={"i": i})
            assert time.monotonic() - started < 5.0
            assert pub.stats.fresh >= 10_000 and pub.stats.errors == 0
    run(main())


def test_never_blocks_when_a_subscriber_does_not_read(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "indexer", max_rate=1e9) as pub:
            stuck = RawSub(run_dir, "indexer", rcvhwm=1)  # connected, never reads
            try:
                await _until(lambda: pub.stats.joined >= 1, t.wait)
                started = time.monotonic()
                for i in range(10_000):
                    pub.update(counters={"i": i}, detail=f"{i:0160d}")
                assert time.monotonic() - started < 5.0
                assert pub.stats.errors == 0
            finally:
                stuck.close()
    run(main())


def test_rate_limit_coalesces_a_burst_to_the_latest_snapshot(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "indexer", max_rate=10, heartbeat_s=60) as pub:
            sub = RawSub(run_dir, "indexer")
            try:
                await sub.recv_one(t.wait)  # joined: the current snapshot came at once
                await asyncio.sleep(0.15)  # let the rate limit's window pass
                fresh_before = pub.stats.fresh
                for i in range(1000):
                    pub.update(phase=Phase.SYNCING, progress=i / 1000, counters={"i": i})
                messages = await sub.recv_all(0.5)
            finally:
                sub.close()
            statuses = [decode_status(m[0]) for m in messages]
            # The first goes out at once, the other 999 coalesce into one 0.1 s later.
            assert 1 <= len(statuses) <= 3, [s.counters for s in statuses]
            assert pub.stats.fresh - fresh_before == len(statuses)
            assert pub.stats.coalesced >= 990
            last = statuses[-1]
            assert last.counters == {"i": 999} and last.progress == 0.999
            assert [s.seq for s in statuses] == sorted({s.seq for s in statuses})
    run(main())


def test_heartbeat_repeats_the_snapshot_without_events(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "indexer", heartbeat_s=t.heartbeat) as pub:
            sub = RawSub(run_dir, "indexer")
            try:
                await sub.recv_one(t.wait)
                pub.update(phase=Phase.READY, detail="serving")
                pub.event("unknown_wallet_query")
                messages = [decode_status(m[0]) for m in await sub.recv_all(t.heartbeat * 4.5)]
            finally:
                sub.close()
        fresh, *repeats = messages
        assert fresh.phase is Phase.READY and fresh.events == (Event("unknown_wallet_query"),)
        assert len(repeats) >= 3
        assert all(r.seq == fresh.seq and r.events == () and r.same_state(fresh) for r in repeats)
        assert [r.ts for r in repeats] == sorted(r.ts for r in repeats) and repeats[-1].ts > fresh.ts
    run(main())


def test_a_joining_subscriber_is_answered_at_once(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=60) as pub:
            pub.update(phase=Phase.READY, detail="tip 830000")
            await asyncio.sleep(0.2)  # the snapshot went out to nobody
            subs = [RawSub(run_dir, "node") for _ in range(2)]
            try:
                started = time.monotonic()
                for sub in subs:
                    status = decode_status(await sub.recv_one(t.wait))
                    assert status.detail == "tip 830000" and status.seq == 2
                assert time.monotonic() - started < 1.0  # not the 60 s heartbeat
            finally:
                for sub in subs:
                    sub.close()
    run(main())


def test_events_merge_by_kind_and_overflow_is_counted(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "indexer", heartbeat_s=60) as pub:
            sub = RawSub(run_dir, "indexer")
            try:
                await sub.recv_one(t.wait)
                await asyncio.sleep(0.15)
                pub.event("first")  # goes out at once
                for _ in range(5):
                    pub.event("unknown_wallet_query")
                for i in range(20):
                    pub.event(f"kind_{i}", detail="x")
                messages = [decode_status(m[0]) for m in await sub.recv_all(0.4)]
            finally:
                sub.close()
        assert [m.events for m in messages][0] == (Event("first"),)
        merged = messages[1].events
        assert merged[0] == Event("unknown_wallet_query", 5)
        assert len(merged) == 8 and merged[-1].kind == "events_dropped"
        assert sum(e.count for e in merged[1:-1]) + merged[-1].count == 20
    run(main())


def test_update_is_lenient_publish_is_strict(run_dir: Path) -> None:
    pub = StatusPublisher(run_dir, "node")
    try:
        s = pub.update(phase=Phase.SYNCING, progress=1.0000001, eta_s=-3)
        assert s.progress == 1.0 and s.eta_s == 0.0
        s = pub.update(progress=float("nan"), eta_s=float("inf"))
        assert s.progress is None and s.eta_s is None
        s = pub.update(progress=0.5, eta_s=60)
        s = pub.update(phase=Phase.READY)  # a new phase: its progress is unknown
        assert s.progress is None and s.eta_s is None
        s = pub.update(detail="a\nb" + "x" * 500)
        assert "\n" not in s.detail and len(s.detail) == 160
        s = pub.update(last_error=ConnectionRefusedError(111, "Connection refused"))
        assert s.last_error == "ConnectionRefusedError: [Errno 111] Connection refused"
        assert s.last_error_ts is not None and abs(s.last_error_ts - time.time()) < 60
        s = pub.update(counters={"a": 1})
        s = pub.update(counters={"b": 2})
        assert s.counters == {"a": 1, "b": 2}
        s = pub.update(last_error=None)
        assert s.last_error is None and s.last_error_ts is None
        with pytest.raises(SchemaError, match="this publisher is 'node'"):
            pub.publish(ServiceStatus("indexer"))
        with pytest.raises(SchemaError):
            pub.update(counters={"Not A Name": 1})
        with pytest.raises(SchemaError):
            pub.event("Bad Kind")
        assert pub.status.phase is Phase.READY
    finally:
        pub.close()


def test_close_says_stopping_unless_in_error(run_dir: Path, t: Timings) -> None:
    async def last_words(final: Phase | None) -> list[Phase]:
        pub = StatusPublisher(run_dir, "node", heartbeat_s=60)
        pub.start()
        sub = RawSub(run_dir, "node")
        try:
            await sub.recv_one(t.wait)
            if final is not None:
                pub.update(phase=final, last_error="disk full")
                await sub.recv_one(t.wait)
            pub.close()
            return [decode_status(m[0]).phase for m in await sub.recv_all(0.3)]
        finally:
            sub.close()

    async def check() -> None:
        assert await last_words(None) == [Phase.STOPPING]
        assert await last_words(Phase.ERROR) == []  # the error stays the last word
    run(check())


def test_publishing_the_same_state_sends_nothing_new(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=60) as pub:
            pub.update(phase=Phase.READY, counters={"height": 5})
            await asyncio.sleep(0.25)
            fresh = pub.stats.fresh
            for _ in range(100):
                pub.update(phase=Phase.READY, counters={"height": 5})
            await asyncio.sleep(0.25)
            assert pub.stats.fresh == fresh and pub.stats.coalesced == 0
    run(main())


def test_wire_messages_are_single_frame_json(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node"):
            sub = RawSub(run_dir, "node")
            try:
                raw = await sub.recv_one(t.wait)
            finally:
                sub.close()
        obj = json.loads(raw)
        assert obj["v"] == 1 and obj["service"] == "node" and obj["phase"] == "starting"
        assert obj["seq"] == 1 and abs(obj["ts"] - time.time()) < 60
    run(main())


async def _until(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_run_dir_is_created_private(run_dir: Path) -> None:
    fresh = run_dir / "run"
    pub = StatusPublisher(fresh, "node")
    try:
        assert stat.S_IMODE(os.stat(fresh / "status").st_mode) == 0o700
    finally:
        pub.close()
