"""Shared helpers: bounded async test bodies, waiting for updates, publisher processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from appliance.status import StatusSubscriber, StatusUpdate, status_endpoint

__all__ = ["PublisherProcess", "RawSub", "Timings", "next_update", "run"]

HERE = Path(__file__).resolve().parent


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    """Run one async test body, failing it rather than hanging."""
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


@dataclass(frozen=True)
class Timings:
    heartbeat: float  # publisher heartbeat
    stale: float  # subscriber stale_after (several heartbeats)
    rescan: float  # subscriber directory rescan
    wait: float  # generous bound for "should happen soon"
    slack: float  # what connecting and scheduling may add to a tight bound

    @classmethod
    def scaled(cls, factor: float) -> Timings:
        return cls(heartbeat=0.1 * factor, stale=0.5 * factor, rescan=0.1 * factor,
                   wait=3.0 * factor, slack=0.2 * factor)


async def next_update(sub: StatusSubscriber, predicate: Callable[[StatusUpdate], bool],
                      timeout: float) -> StatusUpdate:
    """The first update from ``sub`` that satisfies ``predicate`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        async for update in sub:
            if predicate(update):
                return update
    raise AssertionError("subscriber ended")


class RawSub:
    """A plain ZMQ SUB socket on one service's status endpoint: sees every message as sent."""

    def __init__(self, run_dir: Path, service: str, *, rcvhwm: int = 1000) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(status_endpoint(run_dir, service))

    async def recv_all(self, duration: float) -> list[list[bytes]]:
        """Every message that arrives within ``duration`` seconds (the loop keeps running)."""
        out: list[list[bytes]] = []
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                out.append(self.sock.recv_multipart(zmq.DONTWAIT))
            except zmq.Again:
                await asyncio.sleep(0.005)
        return out

    async def recv_one(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                if time.monotonic() > deadline:
                    raise TimeoutError("no status message") from None
                await asyncio.sleep(0.005)
                continue
            assert len(frames) == 1
            return frames[0]

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class PublisherProcess:
    """A real publisher in its own process (``publisher_proc.py``), to kill or stop."""

    def __init__(self, run_dir: Path, service: str, *, heartbeat: float, phase: str = "ready",
                 detail: str = "") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "publisher_proc.py"), str(run_dir), service,
             str(heartbeat), phase, detail],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the publisher has bound and started
        if line.strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"publisher process did not start: {line!r}")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9: no goodbye message, the socket file stays behind."""
        self.proc.kill()
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
