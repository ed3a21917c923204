"""A real supervisord in a short temporary directory, for tests of what runs under it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SUPERVISORCTL", "ctl", "supervisord"]

VENV_BIN = Path(sys.executable).parent
SUPERVISORCTL = str(VENV_BIN / "supervisorctl")


def _head(d: Path) -> str:
    """The sections every test's supervisord needs (socket, logs, XML-RPC, supervisorctl)."""
    return f"""
[unix_http_server]
file={d}/s.sock
chmod=0700

[supervisord]
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/s.sock
"""


@contextmanager
def supervisord(d: Path, programs: str, *, stop_timeout: float = 90.0
                ) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """Run supervisord with ``programs`` (its [program:x] sections) from ``d`` (keep it
    short: unix socket paths); stopped with TERM after (it stops every program first).
    Yields (its configuration file, the process)."""
    conf = d / "supervisord.conf"
    conf.write_text(_head(d) + programs)
    proc = subprocess.Popen([str(VENV_BIN / "supervisord"), "-n", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield conf, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ctl(conf: Path, *args: str) -> str:
    """``supervisorctl`` output (its exit status says little: non-zero for a STOPPED one)."""
    return subprocess.run([SUPERVISORCTL, "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=60).stdout
