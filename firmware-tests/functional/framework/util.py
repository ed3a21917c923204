"""Assert and wait helpers shared by functional tests (after Bitcoin Core's util.py)."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["assert_raises_rpc_error", "free_port", "wait_until"]


# --- Ports -------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
