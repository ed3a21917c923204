"""appliance.status.schema: the wire form, strict validation, limits, the size cap."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.status.schema import (
    MAX_COUNTERS,
    MAX_DETAIL_CHARS,
    MAX_ERROR_CHARS,
    MAX_EVENTS,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    Event,
    Phase,
    SchemaError,
    ServiceStatus,
    clip_text,
    decode_status,
    encode_status,
)

FULL = ServiceStatus(
    service="indexer", phase=Phase.BACKFILLING, progress=0.42, eta_s=310.0,
    detail="wallet 1a2b3c4d: block 812000 of 830000",
    counters={"height": 830000, "wallets": 2, "last_block_ms": 12.5},
    last_error="bitcoind: connection refused", last_error_ts=1764000000.0,
    events=(Event("unknown_wallet_query", 3),), seq=42, ts=1764000123.25)


def wire(**changes: Any) -> bytes:
    """FULL's wire object with some fields changed (a value of ... deletes the field)."""
    obj = FULL.as_dict()
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


def test_round_trip_full_and_minimal() -> None:
    assert decode_status(encode_status(FULL)) == FULL
    minimal = ServiceStatus("node")
    assert decode_status(encode_status(minimal)) == minimal


def test_wire_form_is_one_small_json_object() -> None:
    raw = encode_status(FULL)
    obj = json.loads(raw)
    assert obj["v"] == SCHEMA_VERSION == 1
    assert list(obj) == ["v", "service", "seq", "ts", "phase", "progress", "eta_s", "detail",
                         "counters", "last_error", "last_error_ts", "events"]
    assert obj["events"] == [{"kind": "unknown_wallet_query", "count": 3, "detail": ""}]
    assert len(raw) < 600
    # No events: no events key (heartbeats stay small).
    assert "events" not in json.loads(encode_status(ServiceStatus("node")))


def test_events_are_optional_on_the_wire_and_event_fields_default() -> None:
    assert decode_status(wire(events=...)).events == ()
    status = decode_status(wire(events=[{"kind": "program_fatal"}]))
    assert status.events == (Event("program_fatal", 1, ""),)


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    status = decode_status(wire(ts=1764000000, progress=1, eta_s=0))
    assert status.ts == 1764000000 and status.progress == 1 and status.eta_s == 0


@pytest.mark.parametrize("raw, field", [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"", "not JSON"),
    (wire(progress=float("nan")), "NaN is not a JSON number"),
    (wire(eta_s=float("inf")), "Infinity is not a JSON number"),
    (wire(eta_s=12345.0).replace(b"12345.0", b"1e400"), "eta_s: must be a finite number"),
    (b'{"v": 1, "v": 1}', "v: duplicate field"),
])
def test_rejects_what_is_not_a_json_object(raw: bytes, field: str) -> None:
    with pytest.raises(SchemaError, match=field):
        decode_status(raw)


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None])
def test_rejects_unknown_versions(version: Any) -> None:
    with pytest.raises(SchemaError, match="v: unsupported schema version"):
        decode_status(wire(v=version))


def test_rejects_a_message_without_version() -> None:
    with pytest.raises(SchemaError, match="v: missing"):
        decode_status(wire(v=...))


@pytest.mark.parametrize("changes, message", [
    ({"service": ...}, "service: missing"),
    ({"phase": ...}, "phase: missing"),
    ({"last_error_ts": ...}, "last_error_ts: missing"),
    ({"colour": "red"}, "colour: unknown field"),
    ({"service": "Indexer"}, "service: expected a name"),
    ({"service": "../etc"}, "service: expected a name"),
    ({"service": 7}, "service: expected a string"),
    ({"seq": "1"}, "seq: expected a number"),
    ({"seq": True}, "seq: expected a number"),
    ({"seq": -1}, "seq: must be in"),
    ({"seq": 1.5}, "seq: expected an integer"),
    ({"seq": 2**63}, "seq: must be in"),
    ({"ts": None}, "ts: expected a number"),
    ({"ts": -5}, "ts: must be a finite number >= 0"),
    ({"phase": "bogus"}, "phase: expected one of starting, waiting, syncing"),
    ({"phase": 3}, "phase: expected one of"),
    ({"progress": 1.5}, "progress: must be a finite number in 0..1"),
    ({"progress": -0.1}, "progress: must be a finite number in 0..1"),
    ({"progress": "50%"}, "progress: expected a number"),
    ({"eta_s": -1}, "eta_s: must be a finite number >= 0"),
    ({"detail": None}, "detail: expected a string"),
    ({"detail": "x" * (MAX_DETAIL_CHARS + 1)}, "detail: 161 characters, over the limit of 160"),
    ({"detail": "two\nlines"}, "detail: control or surrogate character"),
    ({"detail": "bell\x07"}, "detail: control"),
    ({"detail": "half \ud800 surrogate"}, "detail: control or surrogate"),
    ({"counters": []}, "counters: expected an object"),
    ({"counters": {"Height": 1}}, "counters: expected a snake_case name"),
    ({"counters": {"height": "830000"}}, "counters.height: expected a number"),
    ({"counters": {"ok": True}}, "counters.ok: expected a number"),
    ({"counters": {"big": 2**64}}, "counters.big: magnitude must be below 2"),
    ({"counters": {f"c{i}": i for i in range(MAX_COUNTERS + 1)}}, "counters: at most 32"),
    ({"last_error": 404}, "last_error: expected a string"),
    ({"last_error": "e" * (MAX_ERROR_CHARS + 1)}, "last_error: 301 characters"),
    ({"last_error_ts": "yesterday"}, "last_error_ts: expected a number"),
    ({"events": {"kind": "x"}}, "events: expected a list"),
    ({"events": ["x"]}, r"events\[\]: expected an object"),
    ({"events": [{"count": 1}]}, r"events\[\].kind: missing"),
    ({"events": [{"kind": "Bad Kind"}]}, r"events\[\].kind: expected a snake_case name"),
    ({"events": [{"kind": "x", "count": 0}]}, r"events\[\].count: must be in 1"),
    ({"events": [{"kind": "x", "when": 1}]}, r"events\[\].when: unknown field"),
    ({"events": [{"kind": "x"}] * (MAX_EVENTS + 1)}, "events: at most 8"),
])
def test_rejects_malformed_fields_naming_them(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        decode_status(wire(**changes))


def test_rejects_oversize_before_parsing() -> None:
    raw = b" " * MAX_MESSAGE_BYTES + encode_status(FULL)
    with pytest.raises(SchemaError, match=f"over the {MAX_MESSAGE_BYTES}-byte cap"):
        decode_status(raw)


def test_every_valid_message_fits_the_cap() -> None:
    """The per-field limits add up to less than the cap, even in 4-byte UTF-8."""
    wide = "\U0001F525"  # 4 bytes in UTF-8, 1 character
    worst = ServiceStatus(
        service="s" * 32, phase=Phase.BACKFILLING, progress=0.123456789012345,
        eta_s=1.2345678901234567e300, detail=wide * MAX_DETAIL_CHARS,
        counters={f"{'c' * 46}{i:02d}": -1.2345678901234567e-300 for i in range(MAX_COUNTERS)},
        last_error=wide * MAX_ERROR_CHARS, last_error_ts=1.2345678901234567e300,
        events=tuple(Event(f"{'k' * 47}{i}", 2**63 - 1, wide * MAX_DETAIL_CHARS)
                     for i in range(MAX_EVENTS)),
        seq=2**63 - 1, ts=1.2345678901234567e300)
    raw = encode_status(worst)
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert decode_status(raw) == worst


def test_the_dataclass_validates_too() -> None:
    with pytest.raises(SchemaError, match="progress"):
        ServiceStatus("node", progress=2.0)
    with pytest.raises(SchemaError, match="service"):
        ServiceStatus("no such/service")
    with pytest.raises(SchemaError, match="events"):
        ServiceStatus("node", events=[Event("x")])  # type: ignore[arg-type]
    # A plain string phase from untyped code is taken if it is a known one.
    assert ServiceStatus("node", phase="ready").phase is Phase.READY  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="phase"):
        ServiceStatus("node", phase="fine")  # type: ignore[arg-type]


def test_counters_are_copied() -> None:
    counters = {"height": 1}
    status = ServiceStatus("node", counters=counters)
    counters["height"] = 2
    assert status.counters == {"height": 1}


def test_same_state_ignores_seq_ts_and_events() -> None:
    import dataclasses

    other = dataclasses.replace(FULL, seq=1, ts=5.0, events=())
    assert FULL.same_state(other)
    assert not FULL.same_state(dataclasses.replace(other, counters={"height": 1}))


def test_describe_is_one_line() -> None:
    assert FULL.describe() == "backfilling 42% (eta 5 min): wallet 1a2b3c4d: block 812000 of 830000"
    assert ServiceStatus("node", phase=Phase.READY).describe() == "ready"


def test_clip_text_makes_any_text_a_valid_field() -> None:
    assert clip_text("line one\nline two\r\n\tend") == "line one line two end"
    assert clip_text("x" * 500, 10) == "xxxxxxxxx…"
    assert clip_text("a\ud800b") == "a b"
    ServiceStatus("node", detail=clip_text("\x00" * 1000 + "y" * 1000))


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_schema_errors(raw: bytes) -> None:
    try:
        decode_status(raw)
    except SchemaError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                          max_size=4),
    max_leaves=10)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["v", "service", "seq", "ts", "phase", "progress", "eta_s",
                                        "detail", "counters", "last_error", "last_error_ts",
                                        "events"]), json_values))
def test_arbitrary_json_objects_raise_only_schema_errors(changes: dict[str, Any]) -> None:
    try:
        decode_status(wire(**changes))
    except SchemaError:
        pass


@settings(max_examples=100)
@given(st.builds(
    ServiceStatus, service=st.sampled_from(["node", "indexer", "display-1"]),
    phase=st.sampled_from(list(Phase)),
    progress=st.none() | st.floats(0, 1), eta_s=st.none() | st.floats(0, 1e9),
    detail=st.text(max_size=MAX_DETAIL_CHARS).map(clip_text),
    counters=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                             st.integers(-2**62, 2**62) | st.floats(-1e9, 1e9), max_size=5),
    seq=st.integers(0, 2**40), ts=st.floats(0, 2e9)))
def test_round_trip_property(status: ServiceStatus) -> None:
    assert decode_status(encode_status(status)) == status
