"""A running service's command socket: JSON requests over a local ZMQ REQ/REP ipc socket.

``appliance wallet add`` and friends talk to the service that owns the state (one
process per LevelDB), instead of opening its database. Requests are
``{"cmd": NAME, ...args}``; replies ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": MESSAGE}``. The socket lives in ``hearth.run_dir`` (0700), so
only the appliance's own user can reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

__all__ = ["ControlError", "ControlServer", "control_request"]

log = logging.getLogger("control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(ValueError):
    """The service refused the command or could not be reached; safe to show."""


def _ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


class ControlServer:
    def __init__(self, endpoint: str, handlers: Mapping[str, Handler]) -> None:
        self.endpoint = endpoint
        self.handlers = dict(handlers)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        path = _ipc_path(endpoint)
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # a stale socket from a killed process
        old = os.umask(0o077)
        try:
            self._sock.bind(endpoint)
        finally:
            os.umask(old)

    async def serve(self) -> None:
        try:
            while True:
                raw = await self._sock.recv()
                reply = await self._dispatch(raw)
                await self._sock.send(json.dumps(reply).encode())
        finally:
            self.close()

    async def _dispatch(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ControlError("request must be a JSON object with a string 'cmd'")
            handler = self.handlers.get(request["cmd"])
            if handler is None:
                raise ControlError(f"unknown command {request['cmd']!r} "
                                   f"(known: {', '.join(sorted(self.handlers))})")
            return {"ok": True, "result": await handler(request)}
        except (ControlError, ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the service; say what failed
            log.exception("control command failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(linger=0)
            self._ctx.term()


def control_request(endpoint: str, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command and wait for its result (raises ControlError)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        path = _ipc_path(endpoint)
        if path is not None and not path.exists():
            raise ControlError(f"the service is not running (no {path})")
        sock.connect(endpoint)
        sock.send(json.dumps({"cmd": cmd, **args}).encode())
        try:
            reply = json.loads(sock.recv())
        except zmq.Again:
            raise ControlError(f"no answer from the service within {timeout:.0f} s") from None
    finally:
        sock.close(linger=0)
        ctx.term()
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "failed"))
    return reply.get("result")
