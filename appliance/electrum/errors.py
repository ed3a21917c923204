"""Every error code the Electrum server sends, in one place, and ``RPCError``.

Codes -32700..-32603 are JSON-RPC 2.0's. Electrum servers add small positive codes
(``BAD_REQUEST`` for a well-formed request the server will not serve, ``DAEMON_ERROR``
when bitcoind failed) and aiorpcX's negative codes for resource limits. Clients show
``message`` to users, so messages never name watched scripts, paths or secrets.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BAD_REQUEST",
    "DAEMON_ERROR",
    "EXCESSIVE_RESOURCE_USAGE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_BUSY",
    "RPCError",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

BAD_REQUEST = 1
DAEMON_ERROR = 2

# aiorpcX's codes, which Electrum clients already know how to display.
EXCESSIVE_RESOURCE_USAGE = -101
SERVER_BUSY = -102


class RPCError(Exception):
    """An error answered to one request.

    ``disconnect`` asks the session to close the connection once the error is sent
    (failed version negotiation, flooding, a request before ``server.version``).
    """

    def __init__(self, code: int, message: str, *, disconnect: bool = False) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.disconnect = disconnect

    def __repr__(self) -> str:
        return f"RPCError({self.code}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RPCError) and self.code == other.code
                and self.message == other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def to_json(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member."""
        return {"code": self.code, "message": self.message}

    @classmethod
    def invalid_params(cls, message: str) -> RPCError:
        return cls(INVALID_PARAMS, message)

    @classmethod
    def invalid_request(cls, message: str) -> RPCError:
        return cls(INVALID_REQUEST, message)

    @classmethod
    def bad_request(cls, message: str, *, disconnect: bool = False) -> RPCError:
        return cls(BAD_REQUEST, message, disconnect=disconnect)
