"""A real supervisord running the supervision listener, a good, a crashing, a flapping program
and one that fails until its cause goes away.

No bitcoind: the programs are ``sleep`` and ``sh``. What is checked is the contract
between supervisord's PROCESS_STATE events, the listener, the status bus and
supervisord's XML-RPC: flood control pauses the flapping program, and nothing is given
up on: FATAL and paused programs are started again after a backoff, for ever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.status import Phase, ServiceStatus, read_status_once
from functional.framework.supervisord import ctl, supervisord
from functional.framework.util import wait_until, write_config

# About 10 s: supervisord's BACKOFF delays and the flapping program's 1.1 s lives.
pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
FLOOD_RESTARTS = 2
FLOOD_WINDOW_S = 60
RETRY_BASE_S = 2
RETRY_MAX_S = 4


@dataclass
class Box:
    dir: Path
    run_dir: Path
    conf: Path
    proc: subprocess.Popen[bytes]
    factor: float

    def ctl(self, *args: str) -> str:
        return ctl(self.conf, *args)

    def state(self, program: str) -> tuple[str, int | None]:
        """(STATE, pid) from ``supervisorctl status``."""
        fields = self.ctl("status", program).split()
        pid = re.search(r"pid (\d+)", self.ctl("status", program))
        return (fields[1] if len(fields) > 1 else "?", int(pid.group(1)) if pid else None)

    def status(self) -> ServiceStatus | None:
        states = read_status_once(self.run_dir, timeout=2.0)
        st = states.get("supervisor")
        return None if st is None else st.status

    def wait_status(self, ok: Callable[[ServiceStatus], object], timeout: float = 30.0) -> ServiceStatus:
        seen: list[ServiceStatus | None] = []

        def check() -> bool:
            st = self.status()
            seen.append(st)
            return st is not None and bool(ok(st))

        try:
            wait_until(check, timeout=timeout, factor=self.factor)
        except Exception:
            raise AssertionError(f"last supervisor status: {seen[-1] if seen else None}") from None
        last = seen[-1]
        assert last is not None
        return last


def _conf(d: Path, hearth_toml: Path) -> str:
    listener = (f"{sys.executable} -m appliance.supervision.service --config {hearth_toml} "
                f"--flood-restarts {FLOOD_RESTARTS} --flood-window {FLOOD_WINDOW_S} "
                f"--retry-base {RETRY_BASE_S} --retry-max {RETRY_MAX_S}")
    return f"""
[eventlistener:hearth-supervision]
command={listener}
events=PROCESS_STATE
buffer_size=100
autorestart=true
stdout_logfile={d}/listener.out
stderr_logfile={d}/listener.err

[program:good]
command=sleep 1000
startsecs=1
autorestart=true
stopwaitsecs=5
stdout_logfile={d}/good.log

[program:crash]
command=sh -c 'exit 1'
startsecs=1
startretries=2
autorestart=true
stdout_logfile={d}/crash.log

[program:flappy]
command=sh -c 'sleep 1.1'
startsecs=1
startretries=100
autorestart=true
stdout_logfile={d}/flappy.log

[program:cure]
command=sh -c 'if [ -e {d}/cause-gone ]; then exec sleep 1000; fi; echo starting;
    echo "Error: Disk space is too low!" >&2; exit 1'
startsecs=1
startretries=1
autorestart=true
redirect_stderr=true
stdout_logfile={d}/cure.log
"""


@pytest.fixture(scope="module")
def box(timeout_factor: float) -> Iterator[Box]:
    d = Path(tempfile.mkdtemp(prefix="hsd-", dir="/tmp"))  # ipc paths must stay < 107 bytes
    run_dir = d / "run"
    run_dir.mkdir()
    hearth_toml = d / "hearth.toml"
    write_config(hearth_toml, {"hearth": {"network": "regtest", "run_dir": run_dir}})
    try:
        with supervisord(d, _conf(d, hearth_toml)) as (conf, proc):
            yield Box(d, run_dir, conf, proc, timeout_factor)
    finally:
        err = d / "listener.err"
        if err.exists():
            sys.stderr.write(err.read_text()[-4000:])  # shown only when a test fails
        shutil.rmtree(d, ignore_errors=True)


def test_fatal_program_degrades_and_is_retried(box: Box) -> None:
    st = box.wait_status(lambda s: s.counters.get("fatal_crash") == 1)
    assert st.phase == Phase.DEGRADED
    assert "crash FATAL" in st.detail
    assert st.counters["restarts_crash"] >= 2 and st.counters["fatal_total"] >= 1
    # Not the end: the listener starts it again after its backoff (and it fails again).
    st = box.wait_status(lambda s: s.counters.get("fatal_total", 0) >= 3, timeout=60)
    assert st.counters["retries"] >= 2
    assert "crash: starting it again" in (box.dir / "listener.err").read_text()


def test_failing_program_shows_its_error_and_comes_back_when_the_cause_goes(box: Box) -> None:
    st = box.wait_status(lambda s: "cure FATAL" in s.detail and "Disk space is too low" in s.detail)
    assert st.phase == Phase.DEGRADED and "retry in" in st.detail
    # What `appliance status` prints for the owner.
    out = subprocess.run([str(VENV_BIN / "appliance"), "status", "--config",
                          str(box.dir / "hearth.toml")], capture_output=True, text=True, timeout=30)
    assert "cure FATAL" in out.stdout and "Disk space is too low" in out.stdout, out.stdout
    (box.dir / "cause-gone").touch()  # space freed: nobody types supervisorctl start
    wait_until(lambda: box.state("cure")[0] == "RUNNING", timeout=4 * RETRY_MAX_S + 10,
               factor=box.factor)
    box.wait_status(lambda s: "cure" not in s.detail)


def test_killed_program_is_restarted_and_counted(box: Box) -> None:
    wait_until(lambda: box.state("good")[0] == "RUNNING", timeout=20, factor=box.factor)
    before = box.wait_status(lambda s: "restarts_good" in s.counters).counters["restarts_good"]
    _, pid = box.state("good")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: box.state("good")[0] == "RUNNING" and box.state("good")[1] != pid,
               timeout=20, factor=box.factor)
    st = box.wait_status(lambda s: s.counters.get("restarts_good") == before + 1)
    assert st.counters["fatal_good"] == 0


def test_flood_control_pauses_a_flapping_program_then_retries(box: Box) -> None:
    text = f"flappy paused after {FLOOD_RESTARTS + 1} restarts in {FLOOD_WINDOW_S} s"
    st = box.wait_status(lambda s: text in s.detail, timeout=40)
    assert st.phase == Phase.DEGRADED and st.counters["flood_stopped"] >= 1  # crash's too
    assert st.counters["restarts_flappy"] >= FLOOD_RESTARTS + 1
    wait_until(lambda: "flappy: restarting too often" in (box.dir / "listener.err").read_text(),
               timeout=10, factor=box.factor)
    # A pause, not an end: after the backoff it runs again (and, flapping, dies again).
    wait_until(lambda: "flappy: starting it again" in (box.dir / "listener.err").read_text(),
               timeout=4 * RETRY_MAX_S, factor=box.factor)
    box.wait_status(lambda s: s.counters["restarts_flappy"] > st.counters["restarts_flappy"])


def test_listener_stdout_is_only_the_protocol(box: Box) -> None:
    """Logs go to stderr: one stray byte on stdout would be read by supervisord as a token."""
    box.wait_status(lambda s: s.counters.get("programs") == 4)
    out = (box.dir / "listener.out").read_text()
    assert out.startswith("READY\n") and re.fullmatch(r"READY\n(RESULT 2\nOKREADY\n)*", out)
