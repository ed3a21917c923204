"""The supervisord event listener: PROCESS_STATE events -> the status bus as ``supervisor``.

Run by supervisord as ``[eventlistener:hearth-supervision]`` with ``events=PROCESS_STATE``::

    python -m appliance.supervision.service --config /etc/hearth/hearth.toml

One asyncio loop does everything: stdin is read with ``connect_read_pipe`` (so the status
publisher's heartbeats go on while supervisord is quiet), each event is answered with
``RESULT 2\\nOK`` and ``READY`` at once, and the calls to supervisord's XML-RPC
interface (flood-control pauses, restarts of FATAL or paused programs after their
backoff, reading a dead program's log tail for its last error) run in worker threads
(a slow answer must not stall the heartbeats).

stdout belongs to the protocol: anything else written there would be read by supervisord
as a malformed token. Logs therefore go to **stderr** (its own rotated log file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, load_config
from ..durability import write_atomic
from ..logs import LOG_FORMAT
from ..services import run_until_signal
from ..status import KEEP, StatusPublisher
from .logtail import last_error_line
from .protocol import ACK, READY, EventReader, ProtocolError, parse_process_state
from .repair import REPAIR_PROGRAM, needs_repair, run_repair
from .rpc import RpcFactory, supervisor_rpc
from .tracker import SupervisionTracker

__all__ = ["SERVICE", "SupervisionListener", "cli", "main", "run_listener"]

SERVICE = "supervisor"  # the status-bus name (docs/status-bus.md)

log = logging.getLogger("supervision")

_TICK_S = 1.0  # how often due restarts are looked for
_TAIL_BYTES = 4096  # of a dead program's log, for its last error line
_MAX_REPAIRS = 3  # in a row without the program staying up: then it is not this damage


class SupervisionListener:
    """Feeds stdin bytes through the protocol and tracker; publishes; asks for stops.

    ``write`` sends protocol bytes to supervisord (stdout); ``rpc`` makes an XML-RPC
    ``supervisor`` namespace (None: no flood-control stops, e.g. in tests).
    """

    def __init__(self, publisher: StatusPublisher, tracker: SupervisionTracker,
                 write: Callable[[bytes], None], rpc: RpcFactory | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 paused_file: Path | None = None) -> None:
        self.publisher = publisher
        self.tracker = tracker
        self.reader = EventReader()
        self.write = write
        self.rpc = rpc
        self.clock = clock
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handled = 0
        self._published_error: str | None = None
        self._stops: set[asyncio.Future[None]] = set()
        self._tails: dict[str, asyncio.Future[tuple[str | None, bool]]] = {}
        self._repairing: asyncio.Future[tuple[bool, str]] | None = None
        self._repairs_unproven: dict[str, int] = {}  # repairs since the program last ran
        self.paused_file = paused_file  # in run_dir: gone after a reboot, as it should be
        self._saved_paused: set[str] | None = None
        self._inherited = self._read_paused()  # before our first publish rewrites it

    def start(self) -> None:
        self._publish()
        self.write(READY)

    def feed(self, data: bytes) -> None:
        try:
            events = self.reader.feed(data)
        except ProtocolError as exc:
            # Out of step with supervisord: no way to resynchronise. Exit; it restarts us.
            self.finish(exc)
            return
        for raw in events:
            try:
                ev = parse_process_state(raw)
            except ProtocolError as exc:
                log.warning("ignoring malformed event: %s", exc)
                ev = None
            if ev is not None:
                log.info("%s: %s -> %s", ev.namespec, ev.from_state or "?", ev.state)
                for name in self.tracker.apply(ev, self.clock()):
                    self._stop(name)
                if ev.state in ("EXITED", "BACKOFF", "FATAL"):
                    self._read_error(ev.namespec)
                elif ev.state == "RUNNING":  # past startsecs: the last repair worked
                    self._repairs_unproven.pop(ev.namespec, None)
                self._publish()
            self.handled += 1
            # Answer at once: supervisord holds the next event (buffer_size) until we do.
            self.write(ACK + READY)

    def finish(self, exc: BaseException | None = None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)

    async def seed(self) -> None:
        """Learn programs started before us (a restarted listener hears no past events)."""
        if self.rpc is None:
            return
        rpc = self.rpc
        try:
            infos = await asyncio.to_thread(lambda: rpc().getAllProcessInfo())
        except Exception as exc:  # best effort: events will fill the picture in
            log.warning("could not list programs: %s", exc)
            return
        paused = self._inherited
        for info in infos:
            group, name = str(info["group"]), str(info["name"])
            spec = group if group == name else f"{group}:{name}"
            self.tracker.seed(spec, str(info["statename"]), self.clock(), paused=spec in paused)
        self._publish()

    def _read_paused(self) -> set[str]:
        if self.paused_file is None:
            return set()
        try:
            return set(json.loads(self.paused_file.read_text()))
        except (OSError, ValueError, TypeError):
            return set()

    def _save_paused(self) -> None:
        """Which programs are paused, for a listener that replaces us (kill -9): a paused
        program looks merely STOPPED to supervisord, and would stay so."""
        paused = self.tracker.paused()
        if self.paused_file is None or paused == self._saved_paused:
            return
        self._saved_paused = paused
        try:
            write_atomic(self.paused_file, json.dumps(sorted(paused)).encode(), 0o644)
        except OSError as exc:
            log.warning("cannot record paused programs: %s", exc)

    async def tick(self) -> None:
        """Start the programs whose retry delay is over, for as long as we run."""
        while True:
            await asyncio.sleep(_TICK_S)
            due = self.tracker.due(self.clock())
            for name in due:
                self._start(name)
            if due:
                self._publish()

    def _start(self, name: str) -> None:
        self._control(name, "start", "starting it again")

    def _read_error(self, name: str) -> None:
        """Fetch the dead program's log tail for its last error (one read at a time)."""
        if self.rpc is None or name in self._tails:
            return
        rpc = self.rpc

        def call() -> tuple[str | None, bool]:
            proxy = rpc()
            text = str(proxy.tailProcessStdoutLog(name, 0, _TAIL_BYTES)[0])
            found = last_error_line(text)
            if found is None:  # a program whose stderr has its own log
                text = str(proxy.tailProcessStderrLog(name, 0, _TAIL_BYTES)[0])
                found = last_error_line(text)
            return found, needs_repair(name, text)

        fut = asyncio.ensure_future(asyncio.to_thread(call))
        self._tails[name] = fut
        fut.add_done_callback(lambda f: self._error_read(name, f))

    def _error_read(self, name: str, fut: asyncio.Future[tuple[str | None, bool]]) -> None:
        self._tails.pop(name, None)
        if fut.cancelled() or fut.exception() is not None:
            return  # no log (stdout_logfile=NONE) or supervisord busy: the state says enough
        error, damaged = fut.result()
        if damaged and self._repairing is None:
            if self._repairs_unproven.get(name, 0) < _MAX_REPAIRS:
                error = "block filter index damaged by a crash: repairing it"
                self._repair(name)
            else:  # the rewind did not help: a person must choose (-reindex: days)
                error = (f"block filter index still damaged after {_MAX_REPAIRS} repairs: "
                         "bitcoind needs -reindex")
        self.tracker.note_error(name, error)
        self._publish()

    def _repair(self, name: str) -> None:
        """Run the repair its log asked for (repair.py), off the event loop."""
        assert self.rpc is not None
        rpc = self.rpc
        log.warning("%s: its block filter index is damaged; repairing it", name)
        self.publisher.event("repair_started", f"{name}: block filter index damaged by a crash")
        fut = asyncio.ensure_future(asyncio.to_thread(lambda: run_repair(rpc())))
        self._repairing = fut
        self._repairs_unproven[name] = self._repairs_unproven.get(name, 0) + 1
        fut.add_done_callback(lambda f: self._repaired(name, f))

    def _repaired(self, name: str, fut: asyncio.Future[tuple[bool, str]]) -> None:
        self._repairing = None
        if fut.cancelled():
            return
        exc = fut.exception()
        ok, said = (False, str(exc)) if exc is not None else fut.result()
        if ok:
            self.tracker.note_repaired(name, said)
            log.warning("%s: repaired (%s); started again", name, said)
            self.publisher.event("repaired", f"{name}: {said}")
        else:
            log.error("%s: repair failed: %s", name, said)
            self.tracker.note_error(name, f"block filter index repair failed: {said}")
        self._publish()

    async def drain(self) -> None:
        """Wait for stops still in flight (on exit)."""
        pending: set[asyncio.Future[Any]] = {*self._stops, *self._tails.values()}
        if self._repairing is not None:
            pending.add(self._repairing)
        if pending:
            await asyncio.wait(pending, timeout=5)

    def _publish(self) -> None:
        s = self.tracker.summary()
        # last_error only when it changes: every update(last_error=...) restamps its time.
        new_error = s.last_error != self._published_error
        self._published_error = s.last_error
        self.publisher.update(phase=s.phase, detail=s.detail, counters=s.counters,
                              last_error=s.last_error if new_error else KEEP)
        for kind, detail in self.tracker.take_events():
            self.publisher.event(kind, detail)
        self._save_paused()

    def _stop(self, name: str) -> None:
        self._control(name, "stop", "restarting too often; pausing it")

    def _control(self, name: str, action: str, why: str) -> None:
        """``startProcess``/``stopProcess`` in a worker thread, without waiting for the
        program (bitcoind may take minutes to stop; its events tell us)."""
        if self.rpc is None:
            log.warning("%s: would %s it, but supervisord's RPC is unknown", name, action)
            return
        rpc = self.rpc
        log.warning("%s: %s", name, why)

        def call() -> None:
            proxy = rpc()
            (proxy.startProcess if action == "start" else proxy.stopProcess)(name, False)

        fut = asyncio.ensure_future(asyncio.to_thread(call))
        self._stops.add(fut)
        fut.add_done_callback(lambda f: self._controlled(name, action, f))

    def _controlled(self, name: str, action: str, fut: asyncio.Future[None]) -> None:
        self._stops.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            return
        # stop: NOT_RUNNING, it was between EXITED and STARTING; asked again on its next
        # event. start: ALREADY_STARTED is fine; anything else, later again.
        log.info("%s: %s not done yet: %s", name, action, exc)
        if action == "start":
            self.tracker.retry_later(name, self.clock())
            self._publish()


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, listener: SupervisionListener) -> None:
        self.listener = listener

    def data_received(self, data: bytes) -> None:
        self.listener.feed(data)

    def eof_received(self) -> bool | None:
        self.listener.finish()  # supervisord went away
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.finish(exc)


def _write_stdout(data: bytes) -> None:
    # Blocking writes of a few bytes to a pipe supervisord always reads: never stalls.
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


async def run_listener(cfg: Config, *, flood_restarts: int | None = None,
                       flood_window_s: float | None = None,
                       retry_base_s: float | None = None,
                       retry_max_s: float | None = None,
                       stdin: Any = None, write: Callable[[bytes], None] = _write_stdout,
                       rpc: RpcFactory | None = None) -> None:
    """Serve supervisord on stdin/stdout until EOF or cancellation (limits: the arguments,
    else ``[supervision]`` in the config)."""
    sc = cfg.supervision
    loop = asyncio.get_running_loop()
    stdin = stdin if stdin is not None else sys.stdin.buffer
    mode = os.fstat(stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        # epoll refuses files and /dev/null, and the loop would wait forever: only
        # supervisord (which gives us a pipe) can talk this protocol anyway.
        raise RuntimeError("stdin is not a pipe: run this as a supervisord [eventlistener:x]")
    own = os.environ.get("SUPERVISOR_PROCESS_NAME")
    tracker = SupervisionTracker(
        flood_restarts=flood_restarts or sc.flood_restarts,
        flood_window_s=flood_window_s or sc.flood_window_s,
        retry_base_s=retry_base_s or sc.retry_base_s,
        retry_max_s=max(retry_max_s or sc.retry_max_s, retry_base_s or sc.retry_base_s),
        ignore=[n for n in (own, REPAIR_PROGRAM) if n])
    async with StatusPublisher(cfg.hearth.run_dir, SERVICE) as publisher:
        listener = SupervisionListener(publisher, tracker, write, rpc,
                                       paused_file=cfg.supervision_paused_file)
        transport, _ = await loop.connect_read_pipe(lambda: _StdinProtocol(listener), stdin)
        tick = asyncio.create_task(listener.tick(), name="retries")
        try:
            listener.start()
            await listener.seed()
            await listener.done
        finally:
            tick.cancel()
            transport.close()
            await listener.drain()


async def main(cfg: Config) -> None:
    """The composition root for ``appliance run supervision`` (appliance/services.py)."""
    _log_to_stderr(cfg.log.level)  # run_service pointed logging at stdout: the protocol's
    await run_listener(cfg, rpc=supervisor_rpc())


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(LOG_FORMAT, "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime  # UTC, like appliance.logs
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.supervision.service",
                                description="supervisord event listener for the status bus")
    p.add_argument("--config", type=Path, default=Path("/etc/hearth/hearth.toml"))
    p.add_argument("--flood-restarts", type=int,
                   help="pause a program that restarts more often than this ... "
                        "(default: [supervision] flood_restarts)")
    p.add_argument("--flood-window", type=float, help="... within this many seconds")
    p.add_argument("--retry-base", type=float,
                   help="first delay before a FATAL or paused program is started again; "
                        "doubles each time ...")
    p.add_argument("--retry-max", type=float, help="... up to this, for ever")
    args = p.parse_args(argv)
    for name in ("flood_restarts", "flood_window", "retry_base", "retry_max"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    try:
        cfg = load_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"supervision: {exc}", file=sys.stderr)
        return 2
    _log_to_stderr(cfg.log.level)

    return run_until_signal(lambda: run_listener(
        cfg, flood_restarts=args.flood_restarts, flood_window_s=args.flood_window,
        retry_base_s=args.retry_base, retry_max_s=args.retry_max, rpc=supervisor_rpc()), log)


if __name__ == "__main__":
    sys.exit(cli())
