"""The status bus end to end over real ZMQ ipc sockets: discovery, staleness, one-shot reads.

Publishers that die are real processes killed with SIGKILL (or frozen with SIGSTOP).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import zmq

from appliance.status import (
    Event,
    Phase,
    ServiceState,
    StatusPublisher,
    StatusSubscriber,
    encode_status,
    read_status_once,
    status_endpoint,
    status_socket_path,
)
from appliance.status.schema import ServiceStatus

from .util import PublisherProcess, Timings, next_update, run


def subscriber(run_dir: Path, t: Timings, **kw: object) -> StatusSubscriber:
    return StatusSubscriber(run_dir, stale_after=t.stale, rescan_s=t.rescan, **kw)  # type: ignore[arg-type]


def test_publish_subscribe_round_trip(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "indexer", heartbeat_s=t.heartbeat) as pub, \
                subscriber(run_dir, t) as sub:
            first = await next_update(sub, lambda u: True, t.wait)
            assert first.service == "indexer" and first.state.status is not None
            pub.update(phase=Phase.BACKFILLING, progress=0.42, eta_s=310, detail="wallet 1a2b",
                       counters={"height": 830000})
            pub.event("unknown_wallet_query")
            update = await next_update(
                sub, lambda u: u.state.status is not None and u.state.status.phase == "backfilling",
                t.wait)
            status = update.state.status
            assert status is not None
            assert (status.progress, status.eta_s, status.detail) == (0.42, 310, "wallet 1a2b")
            assert status.counters == {"height": 830000}
            if not update.events:  # the event may come in the message after the state's
                update = await next_update(sub, lambda u: bool(u.events), t.wait)
            assert update.events == (Event("unknown_wallet_query"),)
            snap = sub.snapshot()
            assert list(snap) == ["indexer"]
            assert snap["indexer"].status == pub.status and not snap["indexer"].stale
    run(main())


def test_late_subscriber_is_complete_within_one_heartbeat(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=t.heartbeat) as pub:
            pub.update(phase=Phase.READY, detail="tip 830000", counters={"height": 830000})
            await asyncio.sleep(t.heartbeat * 3)  # long published before anyone listened
            started = time.monotonic()
            async with subscriber(run_dir, t) as sub:
                update = await next_update(sub, lambda u: True, t.wait)
            assert time.monotonic() - started <= t.heartbeat + t.slack
            assert update.state.status is not None
            assert update.state.status.same_state(pub.status)
    run(main())


def test_a_quiet_publisher_stays_fresh_through_heartbeats(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=t.heartbeat) as pub, \
                subscriber(run_dir, t) as sub:
            pub.update(phase=Phase.READY)
            await next_update(sub, lambda u: u.state.status is not None
                              and u.state.status.phase == "ready", t.wait)
            # Heartbeats are not updates, and they keep the service from going stale.
            updates = []
            try:
                async with asyncio.timeout(t.stale * 3):
                    async for update in sub:
                        updates.append(update)
            except TimeoutError:
                pass
            assert updates == []
            state = sub.snapshot()["node"]
            assert not state.stale and state.age_s is not None and state.age_s < t.stale
    run(main())


def test_a_closed_publisher_goes_stale_after_stale_after(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with subscriber(run_dir, t) as sub:
            pub = StatusPublisher(run_dir, "indexer", heartbeat_s=t.heartbeat)
            pub.start()
            pub.update(phase=Phase.READY)
            await next_update(sub, lambda u: u.state.status is not None
                              and u.state.status.phase == "ready", t.wait)
            pub.close()
            stopping = await next_update(sub, lambda u: True, t.wait)
            assert stopping.state.status is not None and stopping.state.status.phase == "stopping"
            closed_at = time.monotonic()
            stale = await next_update(sub, lambda u: u.state.stale, t.stale + t.wait)
            assert time.monotonic() - closed_at >= t.stale * 0.9
            assert stale.service == "indexer"
            assert stale.state.status is not None and stale.state.status.phase == "stopping"
            assert sub.snapshot()["indexer"].stale
            assert not pub.path.exists()  # a clean stop removes its socket file

            # Started again later on the same path: found again, no longer stale.
            async with StatusPublisher(run_dir, "indexer", heartbeat_s=t.heartbeat) as again:
                again.update(phase=Phase.READY, detail="again")
                back = await next_update(sub, lambda u: u.state.status is not None
                                         and u.state.status.detail == "again", t.wait)
                assert not back.state.stale
    run(main())


def test_a_killed_publisher_goes_stale_and_comes_back(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        proc = PublisherProcess(run_dir, "indexer", heartbeat=t.heartbeat, detail="first life")
        try:
            async with subscriber(run_dir, t) as sub:
                await next_update(sub, lambda u: u.state.status is not None
                                  and u.state.status.phase == "ready", t.wait)
                proc.kill()  # kill -9: no goodbye, and the socket file stays
                killed_at = time.monotonic()
                stale = await next_update(sub, lambda u: u.state.stale, t.stale + t.wait)
                assert time.monotonic() - killed_at >= t.stale * 0.5
                assert stale.state.status is not None and stale.state.status.detail == "first life"
                assert status_socket_path(run_dir, "indexer").exists()
                assert sub.snapshot()["indexer"].status is not None

                # supervisord restarts it: the same path, the subscriber reconnects by itself.
                proc = PublisherProcess(run_dir, "indexer", heartbeat=t.heartbeat, detail="second")
                back = await next_update(sub, lambda u: not u.state.stale, t.wait)
                assert back.state.status is not None
                if back.state.status.detail != "second":  # it said "starting" first
                    await next_update(sub, lambda u: u.state.status is not None
                                      and u.state.status.detail == "second", t.wait)
        finally:
            proc.stop()
    run(main())


def test_a_service_started_after_the_subscriber_is_discovered(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with subscriber(run_dir, t) as sub:
            assert sub.snapshot() == {}
            await asyncio.sleep(t.rescan * 2)
            async with StatusPublisher(run_dir, "tower", heartbeat_s=t.heartbeat) as pub:
                pub.update(phase=Phase.READY, detail="3 clients")
                update = await next_update(sub, lambda u: u.state.status is not None
                                           and u.state.status.phase == "ready", t.wait)
                assert update.service == "tower"
                assert update.state.status is not None and update.state.status.detail == "3 clients"
    run(main())


def test_an_expected_service_that_never_starts_is_stale(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with subscriber(run_dir, t, expected=["node", "indexer"]) as sub:
            assert sub.snapshot() == {"indexer": ServiceState(None, None, False),
                                      "node": ServiceState(None, None, False)}
            first = await next_update(sub, lambda u: u.state.stale, t.stale + t.wait)
            second = await next_update(sub, lambda u: u.state.stale, t.wait)
            assert {first.service, second.service} == {"node", "indexer"}
            assert sub.snapshot()["node"] == ServiceState(None, None, True)
    run(main())


def test_a_hung_publisher_is_stale(run_dir: Path, t: Timings) -> None:
    """SIGSTOP: the process and its socket exist, but nothing is said: stale, not fine."""
    async def main() -> None:
        proc = PublisherProcess(run_dir, "node", heartbeat=t.heartbeat)
        try:
            async with subscriber(run_dir, t) as sub:
                await next_update(sub, lambda u: u.state.status is not None
                                  and u.state.status.phase == "ready", t.wait)
                proc.signal(signal.SIGSTOP)
                await next_update(sub, lambda u: u.state.stale, t.stale + t.wait)
                proc.signal(signal.SIGCONT)
                await next_update(sub, lambda u: not u.state.stale, t.wait)
        finally:
            proc.stop()
    run(main())


def test_garbage_on_the_bus_is_counted_and_ignored(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        ctx = zmq.Context()
        rogue = ctx.socket(zmq.XPUB)  # XPUB: it can wait until the subscriber is there
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.setsockopt(zmq.RCVTIMEO, int(t.wait * 1000))
        status_socket_path(run_dir, "rogue").parent.mkdir(mode=0o700)
        rogue.bind(status_endpoint(run_dir, "rogue"))
        try:
            async with StatusPublisher(run_dir, "node", heartbeat_s=t.heartbeat) as pub, \
                    subscriber(run_dir, t) as sub:
                await next_update(sub, lambda u: u.service == "node", t.wait)
                assert rogue.recv() == b"\x01"  # the subscriber's subscription arrived
                rogue.send(b"not json")
                rogue.send_multipart([b"two", b"frames"])
                rogue.send(encode_status(ServiceStatus("node", phase=Phase.ERROR)))  # impostor
                rogue.send(encode_status(ServiceStatus("rogue", phase=Phase.READY, seq=1, ts=1.0)))
                update = await next_update(sub, lambda u: u.service == "rogue", t.wait)
                assert update.state.status is not None and update.state.status.phase == "ready"
                assert sub.stats.malformed == {"rogue": 3}
                assert sub.snapshot()["node"].status == pub.status  # the impostor changed nothing
        finally:
            rogue.close(linger=0)
            ctx.term()
    run(main())


def test_run_keeps_the_snapshot_current(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=t.heartbeat) as pub:
            sub = subscriber(run_dir, t)
            task = asyncio.create_task(sub.run())
            pub.update(phase=Phase.READY, detail="tip 1")
            deadline = time.monotonic() + t.wait
            while (status := sub.snapshot().get("node", ServiceState(None, None, False)).status) \
                    is None or status.detail != "tip 1":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            sub.close()
            await asyncio.wait_for(task, t.wait)
    run(main())


def test_close_ends_a_pending_iteration(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        # Nothing to poll yet, and the next rescan a minute away: close() ends it at once.
        sub = StatusSubscriber(run_dir, rescan_s=60)

        async def consume() -> list[object]:
            return [u async for u in sub]

        task = asyncio.create_task(consume())
        await asyncio.sleep(t.rescan)
        started = time.monotonic()
        sub.close()
        assert await asyncio.wait_for(task, t.wait) == []
        assert time.monotonic() - started < t.slack
        sub.close()

        # With sockets to poll: closing them ends the poll.
        async with StatusPublisher(run_dir, "node", heartbeat_s=t.heartbeat):
            sub = StatusSubscriber(run_dir, rescan_s=60)
            task = asyncio.create_task(consume())
            await asyncio.sleep(t.heartbeat * 2)
            started = time.monotonic()
            sub.close()
            assert len(await asyncio.wait_for(task, t.wait)) == 1
            assert time.monotonic() - started < t.slack
    run(main())


# --- read_status_once ---------------------------------------------------------------------
def test_read_status_once_hears_every_live_publisher_at_once(run_dir: Path, t: Timings) -> None:
    async def main() -> None:
        async with StatusPublisher(run_dir, "node", heartbeat_s=60) as node, \
                StatusPublisher(run_dir, "indexer", heartbeat_s=60) as indexer:
            node.update(phase=Phase.READY, detail="tip 830000")
            indexer.update(phase=Phase.SYNCING, progress=0.5)
            # A socket file a killed process left behind.
            with socket.socket(socket.AF_UNIX) as dead:
                dead.bind(str(status_socket_path(run_dir, "tower")))
            await asyncio.sleep(0.15)
            started = time.monotonic()
            # In a thread: the publishers' loop must keep running to answer.
            states = await asyncio.to_thread(read_status_once, run_dir, 30.0,
                                             expected=["node", "indexer", "backup"])
            elapsed = time.monotonic() - started
        assert elapsed < 1.0, elapsed  # nobody waited for a heartbeat (60 s) or the timeout
        assert sorted(states) == ["backup", "indexer", "node", "tower"]
        node_state, indexer_state = states["node"], states["indexer"]
        assert node_state.status is not None and node_state.status.detail == "tip 830000"
        assert indexer_state.status is not None and indexer_state.status.progress == 0.5
        assert not node_state.stale and not indexer_state.stale
        assert states["tower"] == ServiceState(None, None, True)  # dead: not running
        assert states["backup"] == ServiceState(None, None, True)  # expected, no socket
    run(main())


def test_read_status_once_reports_a_killed_and_a_hung_service(run_dir: Path, t: Timings) -> None:
    killed = PublisherProcess(run_dir, "indexer", heartbeat=t.heartbeat)
    hung = PublisherProcess(run_dir, "node", heartbeat=t.heartbeat)
    try:
        killed.kill()
        hung.signal(signal.SIGSTOP)
        started = time.monotonic()
        states = read_status_once(run_dir, timeout=0.5)
        assert 0.4 <= time.monotonic() - started < 0.5 + t.wait  # waited for the hung one only
        assert states == {"indexer": ServiceState(None, None, True),
                          "node": ServiceState(None, None, True)}
        hung.signal(signal.SIGCONT)
        states = read_status_once(run_dir, timeout=t.wait)
        assert states["node"].status is not None and not states["node"].stale
    finally:
        hung.stop()
        killed.stop()


def test_read_status_once_without_any_service(run_dir: Path) -> None:
    started = time.monotonic()
    assert read_status_once(run_dir / "nothing-here") == {}
    assert read_status_once(run_dir, expected=["node"]) == {"node": ServiceState(None, None, True)}
    assert time.monotonic() - started < 0.5
