"""appliance.electrum.jsonrpc: lines to typed messages, and responses to lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.electrum.errors import (
    EXCESSIVE_RESOURCE_USAGE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    RPCError,
)
from appliance.electrum.jsonrpc import (
    Batch,
    Invalid,
    Notification,
    Request,
    encode,
    error_response,
    notification,
    parse_message,
    response,
)


def parse(obj: Any, **kw: Any) -> Any:
    return parse_message(json.dumps(obj).encode(), **kw)


def test_parse_message_request_v2() -> None:
    msg = parse({"jsonrpc": "2.0", "id": 7, "method": "server.ping", "params": []})
    assert msg == Request("server.ping", [], 7, True)


def test_parse_message_params_default_to_empty_and_may_be_named() -> None:
    assert parse({"id": "a", "method": "m"}) == Request("m", [], "a", False)
    assert parse({"id": 1, "method": "m", "params": {"x": 1}}).params == {"x": 1}


def test_parse_message_notification_v2_has_no_id_member() -> None:
    assert parse({"jsonrpc": "2.0", "method": "m"}) == Notification("m", [], True)
    # In 2.0 "id": null is still a request (answered with id null) ...
    assert parse({"jsonrpc": "2.0", "id": None, "method": "m"}) == Request("m", [], None, True)
    # ... while JSON-RPC 1.0 marks notifications with a null id.
    assert parse({"id": None, "method": "m", "params": []}) == Notification("m", [], False)


def test_parse_message_rejects_wrong_jsonrpc_version() -> None:
    msg = parse({"jsonrpc": "1.0", "id": 3, "method": "m"})
    assert isinstance(msg, Invalid)
    assert msg.error.code == INVALID_REQUEST and msg.id == 3


def test_parse_message_require_v2_refuses_lenient_messages() -> None:
    msg = parse({"id": 3, "method": "m"}, require_v2=True)
    assert isinstance(msg, Invalid) and msg.error.code == INVALID_REQUEST and msg.id == 3
    assert isinstance(parse({"jsonrpc": "2.0", "id": 3, "method": "m"}, require_v2=True),
                      Request)


@pytest.mark.parametrize("bad_id", [True, [1], {"a": 1}])
def test_parse_message_invalid_id_is_answered_with_null_id(bad_id: Any) -> None:
    msg = parse({"jsonrpc": "2.0", "id": bad_id, "method": "m"})
    assert isinstance(msg, Invalid) and msg.error.code == INVALID_REQUEST and msg.id is None


def test_parse_message_method_must_be_a_string() -> None:
    for obj in ({"id": 1}, {"id": 1, "method": 5}):
        msg = parse(obj)
        assert isinstance(msg, Invalid) and msg.error.code == INVALID_REQUEST and msg.id == 1


def test_parse_message_params_must_be_structured() -> None:
    msg = parse({"id": 1, "method": "m", "params": "x"})
    assert isinstance(msg, Invalid) and msg.error.code == INVALID_PARAMS and msg.id == 1


@pytest.mark.parametrize("line", [b"{", b"nope", b'{"id":1,', b"[1,]", b"NaN",
                                  b'{"id": Infinity, "method": "m"}', b"\xff\xfe"])
def test_parse_message_malformed_is_parse_error_with_null_id(line: bytes) -> None:
    msg = parse_message(line)
    assert isinstance(msg, Invalid)
    assert msg.error.code == PARSE_ERROR and msg.id is None


@pytest.mark.parametrize("line", [b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"]" * 40,
                                  b"[" + b"1," * 500_000 + b"1]",
                                  b'[{"id":1,"method":"m","params":[' + b"{}," * 60_000 + b"{}]}]"])
def test_parse_message_refuses_costly_json_before_parsing(line: bytes) -> None:
    msg = parse_message(line)
    assert isinstance(msg, Invalid) and msg.id is None
    assert msg.error.code == EXCESSIVE_RESOURCE_USAGE
    assert msg.error.message.startswith("message refused: ")


def test_parse_message_commas_and_brackets_inside_strings_cost_nothing() -> None:
    text = "[{" * 20 + "," * 60_000
    msg = parse({"id": 1, "method": "m", "params": [text]})
    assert isinstance(msg, Request) and msg.params == [text]


def test_parse_message_non_object_is_invalid_request() -> None:
    for obj in (1, "x", None, True):
        msg = parse(obj)
        assert isinstance(msg, Invalid) and msg.error.code == INVALID_REQUEST


def test_parse_message_empty_batch_is_invalid_request() -> None:
    msg = parse([])
    assert isinstance(msg, Invalid) and msg.error.code == INVALID_REQUEST and msg.id is None


def test_parse_message_batch_keeps_each_member() -> None:
    msg = parse([{"jsonrpc": "2.0", "id": 1, "method": "a"},
                 {"jsonrpc": "2.0", "method": "b"},
                 5,
                 [{"id": 2, "method": "nested"}]])
    assert isinstance(msg, Batch) and msg.v2
    first, second, third, fourth = msg.items
    assert first == Request("a", [], 1, True)
    assert second == Notification("b", [], True)
    assert isinstance(third, Invalid) and third.error.code == INVALID_REQUEST
    assert isinstance(fourth, Invalid) and fourth.error.code == INVALID_REQUEST


def test_response_shapes_are_json_rpc_2() -> None:
    assert response(1, None) == {"jsonrpc": "2.0", "result": None, "id": 1}
    assert error_response(None, RPCError(1, "x")) == {
        "jsonrpc": "2.0", "error": {"code": 1, "message": "x"}, "id": None}
    assert notification("m", [1]) == {"jsonrpc": "2.0", "method": "m", "params": [1]}


def test_encode_is_compact_ascii_on_one_line() -> None:
    line = encode({"a": "é\n", "b": [1, 2]})
    assert line == b'{"a":"\\u00e9\\n","b":[1,2]}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"raw", object()])
def test_encode_refuses_what_json_cannot_carry(value: Any) -> None:
    with pytest.raises(RPCError) as info:
        encode({"result": value})
    assert info.value.code == INTERNAL_ERROR


@given(st.binary(max_size=300))
def test_parse_message_never_raises_on_random_bytes(line: bytes) -> None:
    msg = parse_message(line)
    assert isinstance(msg, Request | Notification | Invalid | Batch)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=5),
    max_leaves=30)
request_like = st.fixed_dictionaries(
    {}, optional={"jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | json_values,
                  "id": json_values, "method": st.text(max_size=30) | json_values,
                  "params": json_values})


@given(request_like | json_values | st.lists(request_like, max_size=5), st.booleans())
def test_parse_message_never_raises_and_answers_are_encodable(value: Any, strict: bool) -> None:
    msg = parse_message(json.dumps(value).encode(), require_v2=strict)
    items = msg.items if isinstance(msg, Batch) else (msg,)
    for item in items:
        if isinstance(item, Invalid):
            encode(error_response(item.id, item.error))
        elif isinstance(item, Request):
            encode(response(item.id, None))
