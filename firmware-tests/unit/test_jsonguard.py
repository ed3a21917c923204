"""appliance.jsonguard: JSON cost bounded from the raw bytes."""

from __future__ import annotations

import json

import pytest

from appliance.jsonguard import json_cost_error


@pytest.mark.parametrize("doc", [b"", b"{}", b'{"a": [1, 2, {"b": [3]}]}', b"not json at all",
                                 json.dumps({"s": "[{," * 100_000}).encode(),
                                 b"[" * 32 + b"]" * 32])
def test_json_cost_error_passes_what_is_cheap(doc: bytes) -> None:
    assert json_cost_error(doc) is None


@pytest.mark.parametrize(("doc", "why"), [
    (b"[" * 33 + b"]" * 33, "nested deeper than 32 levels"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper than 32 levels"),
    (b"[" + b"1," * 50_000 + b"1]", "more than 50,000 values"),
    (b"[]" * 60_000, "more than 50,000 values"),
    (b'{"a": "x", "b": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32 levels"),
])
def test_json_cost_error_refuses_what_is_costly(doc: bytes, why: str) -> None:
    assert json_cost_error(doc) == why


def test_json_cost_error_limits_are_parameters() -> None:
    assert json_cost_error(b"[[[]]]", max_depth=2) == "nested deeper than 2 levels"
    assert json_cost_error(b"[1,2,3]", max_values=2) == "more than 2 values"
