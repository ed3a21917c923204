"""JSON-RPC messages: one received line to a typed message, results to encoded lines.

Pure, no I/O. The Electrum spec allows JSON-RPC 1.0 or 2.0 and real clients send
``"jsonrpc": "2.0"``. Like aiorpcX (ElectrumX's RPC layer) a message without a
``jsonrpc`` member is read leniently, but one that names a version must name ``"2.0"``,
and once a client has spoken 2.0 the session passes ``require_v2`` so it must keep doing
so. Everything sent is JSON-RPC 2.0.

:func:`parse_message` never raises: a message that cannot be served comes back as
:class:`Invalid`, carrying the error to answer and the id to answer it with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..jsonguard import json_cost_error
from .errors import EXCESSIVE_RESOURCE_USAGE, INTERNAL_ERROR, PARSE_ERROR, RPCError

__all__ = [
    "Batch",
    "Invalid",
    "Message",
    "Notification",
    "Request",
    "RequestId",
    "encode",
    "error_response",
    "notification",
    "parse_message",
    "response",
]

RequestId = str | int | float | None
Params = list[Any] | dict[str, Any]

_MAX_ECHO = 80  # characters of client input quoted back in an error message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: Params
    id: RequestId
    v2: bool  # carried "jsonrpc": "2.0"


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: Params
    v2: bool


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message (or batch member) to answer with ``error`` and ``id``."""

    error: RPCError
    id: RequestId = None
    v2: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    items: tuple[Request | Notification | Invalid, ...]

    @property
    def v2(self) -> bool:
        return any(item.v2 for item in self.items)


Message = Request | Notification | Invalid | Batch


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def _parse_object(obj: Any, require_v2: bool) -> Request | Notification | Invalid:
    if not isinstance(obj, dict):
        return Invalid(RPCError.invalid_request("a request must be a JSON object"))
    v2 = "jsonrpc" in obj
    msg_id = obj.get("id")
    if not _valid_id(msg_id):
        return Invalid(RPCError.invalid_request(f"invalid id {_echo(msg_id)}"), None, v2)
    if v2 and obj["jsonrpc"] != "2.0":
        return Invalid(RPCError.invalid_request('"jsonrpc" must be "2.0"'), msg_id, v2)
    if require_v2 and not v2:
        return Invalid(RPCError.invalid_request('"jsonrpc": "2.0" missing'), msg_id, v2)
    method = obj.get("method")
    if not isinstance(method, str):
        what = 'no "method"' if method is None else f"invalid method {_echo(method)}"
        return Invalid(RPCError.invalid_request(what), msg_id, v2)
    params = obj.get("params", [])
    if not isinstance(params, list | dict):
        return Invalid(RPCError.invalid_params("params must be an array or an object"),
                       msg_id, v2)
    # 2.0: a request is a notification only without an "id" member; 1.0: when id is null.
    if ("id" not in obj) if v2 else (msg_id is None):
        return Notification(method, params, v2)
    return Request(method, params, msg_id, v2)


def parse_message(line: bytes, *, require_v2: bool = False) -> Message:
    """Read one framed message. Never raises.

    Its cost is bounded before it is parsed (:mod:`appliance.jsonguard`): a message with
    too many values or nested too deep is refused with ``EXCESSIVE_RESOURCE_USAGE``.
    """
    too_costly = json_cost_error(line)
    if too_costly is not None:
        return Invalid(RPCError(EXCESSIVE_RESOURCE_USAGE, f"message refused: {too_costly}"))
    try:
        payload = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return Invalid(RPCError(PARSE_ERROR, "messages must be encoded in UTF-8"))
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, NaN/Infinity and over-long integers.
        return Invalid(RPCError(PARSE_ERROR, "invalid JSON"))
    if isinstance(payload, list):
        if not payload:
            return Invalid(RPCError.invalid_request("batch is empty"))
        return Batch(tuple(_parse_object(obj, require_v2) for obj in payload))
    return _parse_object(payload, require_v2)


def response(msg_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": msg_id}


def error_response(msg_id: RequestId, error: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": msg_id}


def notification(method: str, params: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def encode(payload: Any) -> bytes:
    """Compact JSON bytes (ASCII, so no raw newline can appear).

    Raises ``RPCError(INTERNAL_ERROR)`` for a value JSON cannot carry (NaN, bytes ...).
    """
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise RPCError(INTERNAL_ERROR, "result cannot be encoded as JSON") from exc
