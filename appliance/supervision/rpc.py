"""supervisord's XML-RPC interface, for the listener and for anything that asks
supervisord to restart a program (a library module: no process lives here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RpcFactory", "supervisor_rpc"]

# Makes a ``supervisor`` XML-RPC namespace (supervisor's proxy has no type hints).
RpcFactory = Callable[[], Any]


def supervisor_rpc(env: Mapping[str, str] = os.environ) -> RpcFactory | None:
    """A factory for ``supervisor`` XML-RPC namespaces, or None outside supervisord.

    A new proxy per call: ``xmlrpc.client.ServerProxy`` is not thread-safe, and calls
    run in worker threads.
    """
    if "SUPERVISOR_SERVER_URL" not in env:
        return None
    from supervisor import childutils  # only processes under supervisord need its code

    env = dict(env)
    return lambda: childutils.getRPCInterface(env).supervisor
