"""appliance.electrum.errors: the codes clients see, and RPCError."""

from __future__ import annotations

from appliance.electrum import errors
from appliance.electrum.errors import RPCError


def test_RPCError_codes_match_json_rpc_and_electrum() -> None:
    assert (errors.PARSE_ERROR, errors.INVALID_REQUEST, errors.METHOD_NOT_FOUND,
            errors.INVALID_PARAMS, errors.INTERNAL_ERROR) == (-32700, -32600, -32601,
                                                             -32602, -32603)
    assert (errors.BAD_REQUEST, errors.DAEMON_ERROR) == (1, 2)
    assert (errors.EXCESSIVE_RESOURCE_USAGE, errors.SERVER_BUSY) == (-101, -102)


def test_RPCError_to_json_and_equality() -> None:
    err = RPCError(errors.BAD_REQUEST, "no")
    assert err.to_json() == {"code": 1, "message": "no"}
    assert err == RPCError(1, "no") and hash(err) == hash(RPCError(1, "no"))
    assert err != RPCError(2, "no")
    assert not err.disconnect


def test_RPCError_constructors() -> None:
    assert RPCError.invalid_params("x").code == errors.INVALID_PARAMS
    assert RPCError.invalid_request("x").code == errors.INVALID_REQUEST
    bye = RPCError.bad_request("x", disconnect=True)
    assert bye.code == errors.BAD_REQUEST and bye.disconnect
