"""Assert and wait helpers shared by functional tests (after Bitcoin Core's util.py)."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from appliance.config import dump_toml

__all__ = ["APPLIANCE", "CLIENT", "assert_raises_rpc_error", "free_port", "hearth_section",
           "run_client", "running", "stop_process", "wait_until", "write_config"]


#: The commands the venv installs, run as subprocesses the way an owner runs them.
APPLIANCE = str(Path(sys.executable).parent / "appliance")
CLIENT = str(Path(sys.executable).parent / "appliance-client")


# --- Ports -------------------------------------------------------------------

# Ports are handed out from below the kernel's ephemeral range (32768+ on Linux):
# a port picked by binding to 0 comes from that range, so an outgoing connection
# made by any test process (an RPC client, a ZMQ connect) can take it as its local
# port before bitcoind binds it ("Unable to bind", seen in CI). Like Bitcoin Core's
# test framework, start at an offset from the pid so concurrent runs rarely meet,
# never hand out the same port twice in a run, and skip ports already in use.
_PORT_MIN, _PORT_MAX = 11000, 32000
_next_port = _PORT_MIN + (os.getpid() * 37) % (_PORT_MAX - _PORT_MIN)


def hearth_section(base: Path) -> dict[str, Any]:
    """hearth.toml's ``[hearth]`` section of a test box rooted at ``base``."""
    return {"network": "regtest", "data_dir": base / "data", "run_dir": base / "run"}


def write_config(path: Path, tables: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``tables`` (section -> key -> value) as hearth.toml, through the appliance's
    own writer."""
    path.write_text(dump_toml(tables))
    return path


class _Runnable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


P = TypeVar("P", bound=_Runnable)


def running(proc: P) -> Iterator[P]:
    """Start ``proc`` for the test, stop it after (a fixture's body: ``yield from``)."""
    proc.start()
    yield proc
    proc.stop()


def run_client(state: Path, *args: str, stdin: str | None = None, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``appliance-client --state-dir STATE ARGS``; with ``check``, a failure raises with
    its output."""
    res = subprocess.run([CLIENT, "--state-dir", str(state), *args], capture_output=True,
                         text=True, timeout=timeout, input=stdin)
    if check and res.returncode != 0:
        raise AssertionError(res.stdout + res.stderr)
    return res


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and no other call got."""
    global _next_port
    for _ in range(_PORT_MAX - _PORT_MIN):
        port = _next_port
        _next_port = _PORT_MIN + (_next_port + 1 - _PORT_MIN) % (_PORT_MAX - _PORT_MIN)
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port left in {_PORT_MIN}-{_PORT_MAX}")


# --- Processes ---------------------------------------------------------------

def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Wait functions ----------------------------------------------------------

def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, factor: float = 1.0,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; on time-out fail showing its source."""
    deadline = time.monotonic() + timeout * factor
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            try:
                src = inspect.getsource(predicate).strip()
            except (OSError, TypeError):
                src = repr(predicate)
            raise AssertionError(f"wait_until() timed out after {timeout * factor:.1f}s: {src}")
        time.sleep(interval)


# --- Assert functions --------------------------------------------------------

def assert_raises_rpc_error(code: int | None, message: str | None, fun: Callable[..., Any],
                            *args: Any, **kwargs: Any) -> None:
    """Call ``fun`` and check it raises an RPC error with this code and message part."""
    from .node import RPCError

    try:
        fun(*args, **kwargs)
    except RPCError as exc:
        if code is not None and exc.code != code:
            raise AssertionError(f"expected RPC error code {code}, got {exc.code}: {exc}") from exc
        if message is not None and message not in exc.message:
            raise AssertionError(f"expected {message!r} in RPC error {exc.message!r}") from exc
        return
    raise AssertionError("no RPC error raised")
