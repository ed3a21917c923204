"""The supervisord event listener: protocol framing, the tracker's rules, and the bus output."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import dump_toml, load_config
from appliance.status import Phase, StatusPublisher, read_status_once
from appliance.status.schema import MAX_COUNTERS
from appliance.supervision import (
    ACK,
    READY,
    EventReader,
    ProcessStateEvent,
    ProtocolError,
    RawEvent,
    SupervisionTracker,
    parse_process_state,
)
from appliance.supervision.logtail import last_error_line
from appliance.supervision.protocol import MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES
from appliance.supervision.service import SupervisionListener, run_listener
from appliance.supervision.tracker import counter_suffix

_serial = 0


def frame(state: str, name: str, from_state: str = "STARTING", **extra: object) -> bytes:
    """One event exactly as supervisord 4 writes it to a listener's stdin."""
    global _serial
    _serial += 1
    tokens = {"processname": name, "groupname": name, "from_state": from_state, **extra}
    payload = " ".join(f"{k}:{v}" for k, v in tokens.items()).encode()
    header = (f"ver:3.0 server:supervisor serial:{_serial} pool:hearth-supervision "
              f"poolserial:{_serial} eventname:PROCESS_STATE_{state} len:{len(payload)}\n")
    return header.encode() + payload


def ev(state: str, name: str, **kw: Any) -> ProcessStateEvent:
    return ProcessStateEvent(state=state, process=name, group=name, from_state="", **kw)


# --- protocol ----------------------------------------------------------------------------
def test_reader_one_event() -> None:
    raw = frame("RUNNING", "hearth-node", pid=42)
    [got] = EventReader().feed(raw)
    assert got.eventname == "PROCESS_STATE_RUNNING"
    assert got.headers["pool"] == "hearth-supervision"
    assert got.payload == b"processname:hearth-node groupname:hearth-node from_state:STARTING pid:42"


def test_reader_byte_by_byte_and_several_per_chunk() -> None:
    raws = [frame("STARTING", "a", from_state="STOPPED", tries=0), frame("BACKOFF", "a", tries=1),
            frame("FATAL", "a", from_state="BACKOFF")]
    reader = EventReader()
    out: list[RawEvent] = []
    for byte in b"".join(raws[:2]):
        out += reader.feed(bytes([byte]))
    assert len(out) == 2 and reader.pending == 0
    out += reader.feed(raws[2][:10])
    assert len(out) == 2 and reader.pending == 10
    out += reader.feed(raws[2][10:] + raws[0])  # the rest, plus a whole next event
    assert [e.eventname for e in out] == ["PROCESS_STATE_STARTING", "PROCESS_STATE_BACKOFF",
                                          "PROCESS_STATE_FATAL", "PROCESS_STATE_STARTING"]


def test_reader_zero_length_payload() -> None:
    [got] = EventReader().feed(b"ver:3.0 eventname:TICK_5 len:0\n")
    assert got.payload == b"" and parse_process_state(got) is None


@pytest.mark.parametrize("bad", [
    b"ver:3.0 len:5\nhello",  # no eventname
    b"ver:3.0 eventname:X len:abc\n",
    b"ver:3.0 eventname:X len:-1\n",
    b"ver:3.0 eventname:X\n",  # no len
    b"garbage eventname:X len:0\n",  # a token without ':'
    f"eventname:X len:{MAX_PAYLOAD_BYTES + 1}\n".encode(),
    b"x" * (MAX_HEADER_BYTES + 1),  # no newline for too long
])
def test_reader_rejects(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        EventReader().feed(bad)


def test_parse_process_state_fields() -> None:
    [exited] = EventReader().feed(frame("EXITED", "sleeper", from_state="RUNNING", expected=0, pid=7))
    got = parse_process_state(exited)
    assert got == ProcessStateEvent("EXITED", "sleeper", "sleeper", "RUNNING", None, False, 7)
    [backoff] = EventReader().feed(frame("BACKOFF", "x", tries=3))
    b = parse_process_state(backoff)
    assert b is not None and b.state == "BACKOFF" and b.tries == 3 and b.expected is None


def test_parse_process_state_group_namespec() -> None:
    raw = RawEvent({"eventname": "PROCESS_STATE_RUNNING", "len": "0"},
                   b"processname:w_01 groupname:workers from_state:STARTING pid:1")
    got = parse_process_state(raw)
    assert got is not None and got.namespec == "workers:w_01"


def test_parse_process_state_missing_names() -> None:
    raw = RawEvent({"eventname": "PROCESS_STATE_RUNNING", "len": "0"}, b"from_state:STARTING")
    with pytest.raises(ProtocolError, match="processname"):
        parse_process_state(raw)


# --- tracker -----------------------------------------------------------------------------
def test_tracker_ready_then_fatal_then_recovered() -> None:
    t = SupervisionTracker()
    t.apply(ev("STARTING", "good"), 0)
    t.apply(ev("RUNNING", "good"), 1)
    s = t.summary()
    assert s.phase == Phase.READY and s.detail == "1 of 1 programs running"
    for tries in (1, 2):
        t.apply(ev("STARTING", "bad"), 2)
        assert t.apply(ev("BACKOFF", "bad", tries=tries), 2) == []
    t.apply(ev("FATAL", "bad"), 3)
    s = t.summary()
    assert s.phase == Phase.DEGRADED
    assert s.detail == "bad FATAL, retry in 10 s; 1 of 2 programs running"
    assert s.last_error == "bad entered FATAL: exited too quickly (2 retries)"
    assert s.counters["fatal_bad"] == 1 and s.counters["restarts_bad"] == 2
    assert s.counters["fatal"] == 1 and s.counters["fatal_total"] == 1
    assert s.counters["restarts_good"] == 0 and s.counters["running"] == 1
    assert t.take_events() == [("program_fatal", "bad")]
    assert t.take_events() == []
    assert t.due(12.9) == []
    assert t.due(13) == ["bad"] and t.due(14) == []  # the listener starts it: not given up
    t.apply(ev("STARTING", "bad"), 13)
    t.apply(ev("RUNNING", "bad"), 14)
    s = t.summary()
    assert s.phase == Phase.READY and s.counters["fatal_bad"] == 0 and s.counters["fatal_total"] == 1
    assert s.last_error is not None  # the passing error stays visible (docs/status-bus.md)


def test_tracker_counts_exited_as_restart() -> None:
    t = SupervisionTracker()
    t.apply(ev("RUNNING", "good"), 0)
    t.apply(ev("EXITED", "good", expected=False, pid=5), 1)  # kill -9
    t.apply(ev("STARTING", "good"), 1)
    t.apply(ev("RUNNING", "good"), 2)
    assert t.summary().counters["restarts_good"] == 1


def test_tracker_flood_control() -> None:
    t = SupervisionTracker(flood_restarts=3, flood_window_s=60)
    for i in range(3):
        assert t.apply(ev("EXITED", "loop"), 10.0 * i) == []
        t.apply(ev("STARTING", "loop"), 10.0 * i)
    # A 4th death more than 60 s after the 1st: only 3 in the window, no stop.
    assert t.apply(ev("EXITED", "loop"), 61) == []
    t.apply(ev("STARTING", "loop"), 61)
    assert t.apply(ev("BACKOFF", "loop"), 62) == ["loop"]  # 4 in (2, 62]
    s = t.summary()
    assert s.phase == Phase.DEGRADED
    assert s.detail.startswith("loop paused after 4 restarts in 60 s")
    assert s.last_error == "loop paused after 4 restarts in 60 s"
    assert t.take_events() == [("program_flood_stopped", "loop")]
    # The stop raced with a restart: asked again on the next sign of life, until STOPPED.
    assert t.apply(ev("STARTING", "loop"), 63) == ["loop"]
    assert t.apply(ev("STOPPED", "loop"), 63) == []
    s = t.summary()
    assert s.phase == Phase.DEGRADED and s.counters["flood_stopped"] == 1
    assert "retry in 10 s" in s.detail
    assert t.due(72) == [] and t.due(73) == ["loop"]  # a pause, not an end
    # Started again: a fresh chance.
    assert t.apply(ev("STARTING", "loop"), 100) == []
    assert t.apply(ev("RUNNING", "loop"), 101) == []
    assert t.summary().phase == Phase.READY
    assert t.apply(ev("EXITED", "loop"), 102) == []


def test_tracker_fatal_wins_over_flood() -> None:
    t = SupervisionTracker(flood_restarts=1, flood_window_s=60)
    t.apply(ev("BACKOFF", "x", tries=1), 0)
    assert t.apply(ev("BACKOFF", "x", tries=2), 1) == ["x"]
    t.apply(ev("FATAL", "x"), 2)  # supervisord gave up before our stop landed
    s = t.summary()
    assert s.detail == "x FATAL, retry in 10 s; 0 of 1 programs running"
    assert s.counters["flood_stopped"] == 0


def test_tracker_never_gives_up_backoff_doubles_caps_and_resets() -> None:
    t = SupervisionTracker(retry_base_s=10, retry_max_s=40, flood_window_s=60)
    now = 0.0
    delays = []
    for _ in range(5):  # FATAL, wait, start, FATAL again ...
        t.apply(ev("FATAL", "bitcoind"), now)
        delays.append(t.programs["bitcoind"].delay_s)
        now += delays[-1]
        assert t.due(now) == ["bitcoind"]
        t.apply(ev("STARTING", "bitcoind"), now)
    assert delays == [10, 20, 40, 40, 40]
    assert t.summary().counters["retries"] == 5
    t.apply(ev("RUNNING", "bitcoind"), now)
    assert t.summary().phase == Phase.READY
    t.note_error("bitcoind", "Error: Disk space is too low!")
    t.apply(ev("FATAL", "bitcoind"), now + 61)  # up longer than the window: start over
    s = t.summary()
    assert t.programs["bitcoind"].delay_s == 10
    assert s.detail.startswith("bitcoind FATAL, retry in 10 s: Error: Disk space is too low!")
    assert s.counters["failing"] == 1
    # A start that supervisord refused is tried again later.
    assert t.due(now + 71) == ["bitcoind"]
    t.retry_later("bitcoind", now + 71)
    assert t.due(now + 71 + 20) == ["bitcoind"]
    # Stopped on purpose (operator, shutdown): left alone.
    t.apply(ev("STOPPED", "bitcoind"), now + 100)
    assert t.due(now + 10_000) == []


def test_a_paused_program_is_not_forgotten_by_a_new_listener(run_dir: Path) -> None:
    """Killed while a program is paused, the next listener still starts it again."""
    paused_file = run_dir / "paused.json"

    async def body() -> None:
        async with StatusPublisher(run_dir, "supervisor") as pub:
            first = SupervisionListener(pub, SupervisionTracker(flood_restarts=1), lambda b: None,
                                        lambda: FakeRpc(), clock=lambda: 0.0,
                                        paused_file=paused_file)
            first.start()
            first.feed(frame("EXITED", "loop") + frame("STARTING", "loop") + frame("EXITED", "loop"))
            first.feed(frame("STOPPED", "loop"))
            await first.drain()
            assert json.loads(paused_file.read_text()) == ["loop"]
            rpc = FakeRpc([{"group": "loop", "name": "loop", "statename": "STOPPED"},
                           {"group": "off", "name": "off", "statename": "STOPPED"}])
            second = SupervisionListener(pub, SupervisionTracker(retry_base_s=1), lambda b: None,
                                         lambda: rpc, clock=lambda: 5.0, paused_file=paused_file)
            second.start()
            await second.seed()
            assert second.tracker.due(5.0) == [] and second.tracker.due(6.0) == ["loop"]

    asyncio.run(asyncio.wait_for(body(), 20))


def test_last_error_line() -> None:
    tb = ("2026-12-04T11:00:00 INFO tower: opening\nTraceback (most recent call last):\n"
          '  File "x.py", line 1, in <module>\n'
          "plyvel._plyvel.IOError: b'IO error: /d/000004.log: No space left on device'\n")
    assert last_error_line(tb) == (
        "plyvel._plyvel.IOError: b'IO error: /d/000004.log: No space left on device'")
    assert last_error_line("2026-12-04T11:00:00Z Error: Disk space is too low!\nShutdown: done\n") == (
        "Error: Disk space is too low!")
    assert last_error_line("all fine\nbye\n") == "bye"
    assert last_error_line("\n\n") is None
    assert len(last_error_line("OSError: " + "x" * 500) or "") == 160


def test_tracker_ignores_itself_and_seeds() -> None:
    t = SupervisionTracker(ignore="hearth-supervision")
    assert t.apply(ev("RUNNING", "hearth-supervision"), 0) == []
    t.apply(ev("RUNNING", "a"), 0)
    t.seed("a", "STOPPED")  # an event already said RUNNING: newer than the listing
    t.seed("b", "FATAL")
    t.seed("hearth-supervision", "RUNNING")
    s = t.summary()
    assert s.counters["programs"] == 2 and s.counters["running"] == 1
    assert s.phase == Phase.DEGRADED and s.detail.startswith("b FATAL")


def test_tracker_counters_fit_the_schema() -> None:
    t = SupervisionTracker()
    for i in range(40):
        t.apply(ev("RUNNING", f"p-{i:02d}"), 0)
    counters = t.summary().counters
    assert len(counters) <= MAX_COUNTERS and counters["programs"] == 40
    assert counter_suffix("hearth-indexer") == "hearth_indexer"
    assert counter_suffix("9Lives") == "p_9lives"


def test_tracker_arguments() -> None:
    with pytest.raises(ValueError):
        SupervisionTracker(flood_restarts=0)
    with pytest.raises(ValueError):
        SupervisionTracker(flood_window_s=0)


# --- the listener on the bus ---------------------------------------------------------------
@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hsv-", dir="/tmp"))  # short: unix socket paths
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeRpc:
    def __init__(self, infos: list[dict[str, Any]] | None = None) -> None:
        self.stopped: list[tuple[str, bool]] = []
        self.started: list[str] = []
        self.infos = infos or []

    def stopProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        self.stopped.append((name, wait))
        return True

    def getAllProcessInfo(self) -> list[dict[str, Any]]:  # noqa: N802
        return self.infos

    def startProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        self.started.append(name)
        if len(self.started) == 1:
            raise RuntimeError("SHUTDOWN_STATE")  # refused once: must be retried
        return True

    def tailProcessStdoutLog(self, name: str, offset: int, length: int  # noqa: N802
                             ) -> tuple[str, int, bool]:
        return (f"starting {name}\nOSError: [Errno 28] No space left on device\n", 0, False)

    def tailProcessStderrLog(self, name: str, offset: int, length: int  # noqa: N802
                             ) -> tuple[str, int, bool]:
        return ("", 0, False)


def test_listener_answers_publishes_and_stops(run_dir: Path) -> None:
    written: list[bytes] = []
    rpc = FakeRpc()

    async def body() -> None:
        async with StatusPublisher(run_dir, "supervisor") as pub:
            tracker = SupervisionTracker(flood_restarts=1, flood_window_s=60)
            listener = SupervisionListener(pub, tracker, written.append, lambda: rpc,
                                           clock=lambda: 0.0)
            listener.start()
            assert written == [READY]
            data = frame("BACKOFF", "bad", tries=1) + frame("BACKOFF", "bad", tries=2)
            listener.feed(data[:7])
            assert written == [READY]  # nothing answered before a whole event
            listener.feed(data[7:])
            assert written == [READY, ACK + READY, ACK + READY]
            await listener.drain()
            assert rpc.stopped == [("bad", False)]
            listener.feed(frame("FATAL", "bad", from_state="BACKOFF"))
            st = pub.status
            assert st.phase == Phase.DEGRADED and st.counters["fatal_bad"] == 1
            assert st.last_error == "bad entered FATAL: exited too quickly (2 retries)"
            states = await asyncio.to_thread(read_status_once, run_dir, 3.0)
            got = states["supervisor"].status
            assert got is not None and got.phase == Phase.DEGRADED and "bad FATAL" in got.detail
            listener.feed(b"nonsense\n")
            with pytest.raises(ProtocolError):
                await listener.done

    asyncio.run(asyncio.wait_for(body(), 20))


def test_listener_restarts_a_fatal_program_and_shows_its_last_error(run_dir: Path) -> None:
    rpc = FakeRpc()
    now = [0.0]

    async def body() -> None:
        async with StatusPublisher(run_dir, "supervisor") as pub:
            tracker = SupervisionTracker(retry_base_s=5, retry_max_s=5)
            listener = SupervisionListener(pub, tracker, lambda b: None, lambda: rpc,
                                           clock=lambda: now[0])
            tick = asyncio.ensure_future(listener.tick())
            listener.start()
            listener.feed(frame("BACKOFF", "tower", tries=1) + frame("FATAL", "tower"))
            await listener.drain()
            st = pub.status
            assert st.phase == Phase.DEGRADED
            assert ("tower FATAL, retry in 5 s: OSError: [Errno 28] No space left on device"
                    in st.detail)
            await asyncio.sleep(1.5)
            assert rpc.started == []  # not before its delay
            now[0] = 5.0
            for _ in range(60):
                if len(rpc.started) == 2:
                    break
                await asyncio.sleep(0.1)
                now[0] += 1.0  # the refused start is retried after another delay
            assert rpc.started == ["tower", "tower"]
            listener.feed(frame("STARTING", "tower") + frame("RUNNING", "tower", pid=3))
            assert pub.status.phase == Phase.READY
            tick.cancel()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_run_listener_over_a_pipe(run_dir: Path, tmp_path: Path) -> None:
    """The whole process loop in-process: stdin a pipe, EOF ends it, the socket goes away."""
    cfg_file = tmp_path / "hearth.toml"
    cfg_file.write_text(dump_toml({"hearth": {"run_dir": run_dir}}))
    cfg = load_config(cfg_file)
    written: list[bytes] = []
    rpc = FakeRpc([{"group": "seeded", "name": "seeded", "statename": "RUNNING"}])

    async def body() -> None:
        r, w = os.pipe()
        with os.fdopen(r, "rb", buffering=0) as stdin:
            task = asyncio.ensure_future(run_listener(cfg, stdin=stdin, write=written.append,
                                                      rpc=lambda: rpc))
            os.write(w, frame("RUNNING", "good", pid=9))
            for _ in range(200):
                if len(written) >= 2:
                    break
                await asyncio.sleep(0.01)
            states = await asyncio.to_thread(read_status_once, run_dir, 3.0)
            st = states["supervisor"].status
            assert st is not None and st.phase == Phase.READY
            assert st.counters["programs"] == 2 and st.counters["running"] == 2
            os.close(w)  # supervisord went away
            await asyncio.wait_for(task, 5)
        assert written == [READY, ACK + READY]
        assert not (run_dir / "status" / "supervisor.sock").exists()

    asyncio.run(asyncio.wait_for(body(), 20))


def test_run_listener_refuses_a_stdin_that_is_not_a_pipe(run_dir: Path, tmp_path: Path) -> None:
    """/dev/null or a file cannot be watched by epoll: fail at once instead of hanging."""
    cfg_file = tmp_path / "hearth.toml"
    cfg_file.write_text(dump_toml({"hearth": {"run_dir": run_dir}}))
    cfg = load_config(cfg_file)
    with open(os.devnull, "rb") as devnull, pytest.raises(RuntimeError, match="not a pipe"):
        asyncio.run(asyncio.wait_for(run_listener(cfg, stdin=devnull, write=lambda b: None), 10))


class FakeSupervisor:
    """bitcoind failing with a damaged filter index, and the bitcoind-repair program."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.repair_runs = 0

    def stopProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        self.calls.append(("stop", name))
        return True

    def startProcess(self, name: str, wait: bool = True) -> bool:  # noqa: N802
        self.calls.append(("start", name))
        if name == "bitcoind-repair":
            self.repair_runs += 1
        return True

    def getProcessInfo(self, name: str) -> dict[str, Any]:  # noqa: N802
        return {"start": self.repair_runs, "pid": 0, "exitstatus": 0,
                "statename": "EXITED" if self.repair_runs else "STOPPED"}

    def tailProcessStdoutLog(self, name: str, offset: int, length: int  # noqa: N802
                             ) -> tuple[str, int, bool]:
        if name == "bitcoind-repair":
            return ("block filter index rewound to height 5; bitcoind rebuilds it\n", 0, False)
        return ("[error] Cannot read last block filter header; index may be corrupted\n"
                "Shutdown: done\n", 0, False)

    def tailProcessStderrLog(self, name: str, offset: int, length: int  # noqa: N802
                             ) -> tuple[str, int, bool]:
        return ("", 0, False)


def test_listener_repairs_bitcoinds_filter_index_then_gives_up_if_it_does_not_help(
        run_dir: Path) -> None:
    sup = FakeSupervisor()

    async def settle(listener: SupervisionListener) -> None:
        for _ in range(50):
            await listener.drain()
            if listener._repairing is None and not listener._tails:  # noqa: SLF001
                return
            await asyncio.sleep(0.05)

    async def body() -> None:
        async with StatusPublisher(run_dir, "supervisor") as pub:
            listener = SupervisionListener(pub, SupervisionTracker(), lambda b: None,
                                           lambda: sup, clock=lambda: 0.0)
            listener.start()
            listener.feed(frame("BACKOFF", "bitcoind", tries=1))
            await settle(listener)
            assert sup.calls == [("stop", "bitcoind"), ("start", "bitcoind-repair"),
                                 ("start", "bitcoind")]
            st = pub.status
            assert st.counters["repairs"] == 1
            assert st.last_error == ("bitcoind repaired after a crash: block filter index "
                                     "rewound to height 5; bitcoind rebuilds it")
            for _ in range(2):  # still failing the same way: repaired again, up to 3 times
                listener.feed(frame("BACKOFF", "bitcoind", tries=1))
                await settle(listener)
            assert sup.repair_runs == 3
            listener.feed(frame("BACKOFF", "bitcoind", tries=1))
            await settle(listener)
            assert sup.repair_runs == 3  # not a fourth: the rewind does not help
            listener.feed(frame("FATAL", "bitcoind", from_state="BACKOFF"))
            await settle(listener)
            assert "needs -reindex" in pub.status.detail
            # Once bitcoind stays up, a later damage is repaired again.
            listener.feed(frame("STARTING", "bitcoind") + frame("RUNNING", "bitcoind", pid=9))
            listener.feed(frame("BACKOFF", "bitcoind", tries=1))
            await settle(listener)
            assert sup.repair_runs == 4
            # Other programs' logs never ask for it.
            listener.feed(frame("BACKOFF", "hearth-indexer", tries=1))
            await settle(listener)
            assert sup.repair_runs == 4

    asyncio.run(asyncio.wait_for(body(), 30))
