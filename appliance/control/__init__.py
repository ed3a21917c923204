"""A running service's command socket: typed requests over a local ZMQ REQ/REP ipc socket.

``appliance wallet add`` and friends talk to the service that owns the state (one
process per LevelDB), instead of opening its database. Every command is a
:class:`Request` dataclass whose reply is a dataclass too (all of them in
:mod:`appliance.control.messages`, shared by sender and receiver); on the wire a request
is ``{"cmd": NAME, ...fields}`` and a reply ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": MESSAGE}``. The socket lives in ``hearth.run_dir`` (0700), so
only the appliance's own user can reach it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import zmq
import zmq.asyncio

__all__ = ["ControlError", "ControlServer", "Message", "Request", "ask", "control_request"]

log = logging.getLogger("control")

R = TypeVar("R")


class ControlError(ValueError):
    """The service refused the command or could not be reached; safe to show."""


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``, or ControlError saying which field is wrong."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        if value is None and type(None) in arms:
            return None
        errors = []
        for arm in arms:
            if arm is not type(None):
                try:
                    return _decode(arm, value, where)
                except ControlError as exc:
                    errors.append(str(exc))
        raise ControlError("; ".join(errors) or f"{where} must not be null")
    if origin is list:
        if not isinstance(value, list):
            raise ControlError(f"{where} must be a list")
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ControlError(f"{where} must be an object")
        _key, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Message):
        return tp.from_wire(value, where)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ControlError(f"{where} must be an integer")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise ControlError(f"{where} must be {names.get(tp, tp)}")


class Message:
    """A dataclass that crosses the control socket as a JSON object (fields in order)."""

    def to_wire(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: Any, where: str = "") -> Self:
        """Checked field by field: a missing or mistyped field is a ControlError that
        names it; fields this side does not know are ignored (an older peer)."""
        if not isinstance(data, dict):
            raise ControlError(f"{where or cls.__name__} must be a JSON object")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = f"{where}.{f.name}" if where else f.name
            if f.name in data:
                values[f.name] = _decode(hints[f.name], data[f.name], name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ControlError(f"{name} is missing")
        return cls(**values)


class Request(Message, Generic[R]):
    """A command; ``R`` (the generic argument) is the type of its reply."""

    cmd: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Request:
                cls._reply = typing.get_args(base)[0]

    @classmethod
    def decode_reply(cls, result: Any) -> R:
        return typing.cast(R, _decode(cls._reply, result, "reply"))

    _reply: ClassVar[Any] = Any


def encode(value: Any) -> Any:
    """A handler's reply as JSON-ready data."""
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [encode(v) for v in value]
    return value


def _ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


Handler = Callable[[Any], Awaitable[Any]]


class ControlServer:
    """Serves ``handlers``: request class -> coroutine taking that request, returning its
    reply type."""

    def __init__(self, endpoint: str, handlers: Mapping[type[Request[Any]], Handler]) -> None:
        self.endpoint = endpoint
        self.handlers = {cls.cmd: (cls, handler) for cls, handler in handlers.items()}
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
        """The one error path: whatever goes wrong becomes ``{"ok": false, "error": ...}``."""
        try:
            request = json.loads(raw)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise ControlError("request must be a JSON object with a string 'cmd'")
            entry = self.handlers.get(request["cmd"])
            if entry is None:
                raise ControlError(f"unknown command {request['cmd']!r} "
                                   f"(known: {', '.join(sorted(self.handlers))})")
            cls, handler = entry
            return {"ok": True, "result": encode(await handler(cls.from_wire(request)))}
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
    """Send one command by name and wait for its untyped result (raises ControlError).
    The wire level, for tests and tools; the appliance itself uses :func:`ask`."""
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


def ask(endpoint: str, request: Request[R], timeout: float = 30.0) -> R:
    """Send ``request`` and return its typed reply (raises ControlError, also for a reply
    that does not have the reply type's fields)."""
    return request.decode_reply(
        control_request(endpoint, request.cmd, timeout, **request.to_wire()))
