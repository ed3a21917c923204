"""The status bus message: one small, versioned JSON object per ZMQ message.

Every service publishes a *full snapshot* of its state (never a delta), so a subscriber
that joins late is complete after one message. The wire form is one ZMQ frame holding
UTF-8 JSON (see ``docs/status-bus.md`` for the table and examples)::

    {"v": 1, "service": "indexer", "seq": 42, "ts": 1764000000.5, "phase": "backfilling",
     "progress": 0.42, "eta_s": 310.0, "detail": "wallet 1a2b3c4d: block 812000 of 830000",
     "counters": {"height": 830000, "unknown_script_queries": 3},
     "last_error": null, "last_error_ts": null,
     "events": [{"kind": "unknown_wallet_query", "count": 3, "detail": ""}]}

Decoding is strict: an unknown version, a missing or unknown field, a wrong type, an
out-of-range number, control characters in text or a message over
:data:`MAX_MESSAGE_BYTES` raise :class:`SchemaError` naming the field. Publisher and
subscriber ship in the same image, so any change to the schema bumps ``v``.

The per-field limits are chosen so that every valid message fits in
:data:`MAX_MESSAGE_BYTES`; a typical one is 300-600 bytes.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RATE",
    "DEFAULT_STALE_AFTER_S",
    "MAX_COUNTERS",
    "MAX_DETAIL_CHARS",
    "MAX_ERROR_CHARS",
    "MAX_EVENTS",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "WIRE_FIELDS",
    "Event",
    "Phase",
    "SchemaError",
    "ServiceStatus",
    "check_key",
    "check_service_name",
    "clip_text",
    "decode_status",
    "encode_status",
]

SCHEMA_VERSION: Final = 1

#: A publisher repeats its last snapshot at least this often (seconds).
DEFAULT_HEARTBEAT_S: Final = 5.0
#: A subscriber calls a service stale after this long without a message: 3 heartbeats,
#: so one late or lost heartbeat is not an alarm.
DEFAULT_STALE_AFTER_S: Final = 15.0
#: Messages per second a publisher sends at most; bursts coalesce to the latest snapshot.
DEFAULT_MAX_RATE: Final = 10.0

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_DETAIL_CHARS: Final = 160  # one or two lines of the OLED, or one terminal line
MAX_ERROR_CHARS: Final = 300
MAX_COUNTERS: Final = 32
MAX_EVENTS: Final = 8

# Service names become socket file names, so no dots, slashes or upper case.
_SERVICE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
# Counter names and event kinds: snake_case identifiers.
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_INT_LIMIT = 1 << 63

#: Every top-level field, in wire order (all required except ``events``).
WIRE_FIELDS: Final = ("v", "service", "seq", "ts", "phase", "progress", "eta_s", "detail",
                      "counters", "last_error", "last_error_ts", "events")
_OPTIONAL = frozenset({"events"})
_EVENT_FIELDS = frozenset({"kind", "count", "detail"})


class SchemaError(ValueError):
    """A status message (or a status being built) breaks the schema; says which field."""


class Phase(enum.StrEnum):
    """What a service is doing, coarsely; ``detail`` says the rest."""

    STARTING = "starting"  # process up, opening its state
    WAITING = "waiting"  # waiting for a dependency (bitcoind not answering yet)
    SYNCING = "syncing"  # catching up with the chain; progress/eta_s when known
    BACKFILLING = "backfilling"  # serving, and scanning history for a late wallet
    READY = "ready"  # doing its job, up to date
    DEGRADED = "degraded"  # running, but something needs attention (see last_error)
    ERROR = "error"  # cannot do its job; last_error says why
    STOPPING = "stopping"  # shutting down on purpose


@dataclass(frozen=True, slots=True)
class Event:
    """A one-shot happening (``unknown_wallet_query``, ``program_fatal``...).

    Sent once, in the next message after it happened; never repeated by heartbeats.
    Events of the same kind and detail that happen between two messages are merged
    and counted. Anything that must still be visible later belongs in ``counters``
    or ``last_error``.
    """

    kind: str
    count: int = 1
    detail: str = ""

    def __post_init__(self) -> None:
        check_key("events[].kind", self.kind)
        _check_int("events[].count", self.count, minimum=1)
        _check_text("events[].detail", self.detail, MAX_DETAIL_CHARS)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service's full state, as published on the bus.

    ``seq`` and ``ts`` are stamped by the publisher when it sends; ``seq`` counts the
    fresh snapshots of this process from 1 (heartbeats repeat it, a restart starts
    over), ``ts`` is the wall-clock send time. ``progress`` is the fraction (0..1) of
    the current phase's work, ``eta_s`` the seconds left; either may be None when
    unknown. ``last_error`` stays set (with ``last_error_ts``) until the service clears
    it, so an error that has passed can still be seen. Never put a secret in text.
    """

    service: str
    phase: Phase = Phase.STARTING
    progress: float | None = None
    eta_s: float | None = None
    detail: str = ""
    counters: Mapping[str, int | float] = field(default_factory=dict)
    last_error: str | None = None
    last_error_ts: float | None = None
    events: tuple[Event, ...] = ()
    seq: int = 0
    ts: float = 0.0

    def __post_init__(self) -> None:
        check_service_name(self.service)
        if not isinstance(self.phase, Phase):  # a plain string from untyped code
            object.__setattr__(self, "phase", _phase(self.phase))
        if self.progress is not None:
            _check_number("progress", self.progress, minimum=0.0, maximum=1.0)
        if self.eta_s is not None:
            _check_number("eta_s", self.eta_s, minimum=0.0)
        _check_text("detail", self.detail, MAX_DETAIL_CHARS)
        # A private copy: the dataclass is frozen, its counters must not change under it.
        object.__setattr__(self, "counters", _check_counters(self.counters))
        if self.last_error is not None:
            _check_text("last_error", self.last_error, MAX_ERROR_CHARS)
        if self.last_error_ts is not None:
            _check_number("last_error_ts", self.last_error_ts, minimum=0.0)
        if not isinstance(self.events, tuple) or not all(isinstance(e, Event) for e in self.events):
            raise SchemaError("events: expected a tuple of Event")
        if len(self.events) > MAX_EVENTS:
            raise SchemaError(f"events: at most {MAX_EVENTS}, got {len(self.events)}")
        _check_int("seq", self.seq, minimum=0)
        _check_number("ts", self.ts, minimum=0.0)

    def as_dict(self) -> dict[str, Any]:
        """The wire object (JSON-ready); ``events`` only when there are some."""
        out: dict[str, Any] = {
            "v": SCHEMA_VERSION, "service": self.service, "seq": self.seq, "ts": self.ts,
            "phase": self.phase.value, "progress": self.progress, "eta_s": self.eta_s,
            "detail": self.detail, "counters": dict(self.counters),
            "last_error": self.last_error, "last_error_ts": self.last_error_ts,
        }
        if self.events:
            out["events"] = [e.as_dict() for e in self.events]
        return out

    def same_state(self, other: ServiceStatus) -> bool:
        """Equal apart from what every message changes (seq, ts) and one-shot events."""
        return (self.service, self.phase, self.progress, self.eta_s, self.detail,
                dict(self.counters), self.last_error, self.last_error_ts) == (
            other.service, other.phase, other.progress, other.eta_s, other.detail,
            dict(other.counters), other.last_error, other.last_error_ts)

    def describe(self) -> str:
        """One human line: ``backfilling 42% (eta 5 min): wallet 1a2b...``."""
        text = self.phase.value
        if self.progress is not None:
            text += f" {self.progress:.0%}"
        if self.eta_s is not None:
            text += f" (eta {_duration(self.eta_s)})"
        if self.detail:
            text += f": {self.detail}"
        return text


# --- wire ---------------------------------------------------------------------------------
def encode_status(status: ServiceStatus) -> bytes:
    """The one-frame wire form; SchemaError if it would exceed the size cap."""
    raw = json.dumps(status.as_dict(), separators=(",", ":"), ensure_ascii=False,
                     allow_nan=False).encode()
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message: {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte cap")
    return raw


def decode_status(raw: bytes) -> ServiceStatus:
    """Parse and validate one message; SchemaError (naming the field) if malformed."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message: {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte cap")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise SchemaError("message: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"message: not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"message: expected a JSON object, got {type(obj).__name__}")
    if "v" not in obj:
        raise SchemaError("v: missing (not a status message?)")
    version = obj["v"]
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
        raise SchemaError(f"v: unsupported schema version {version!r} (this reader knows "
                          f"{SCHEMA_VERSION})")
    missing = [f for f in WIRE_FIELDS if f not in obj and f not in _OPTIONAL]
    if missing:
        raise SchemaError(f"{missing[0]}: missing")
    unknown = sorted(set(obj) - set(WIRE_FIELDS))
    if unknown:
        raise SchemaError(f"{unknown[0]}: unknown field")
    counters = obj["counters"]
    if not isinstance(counters, dict):
        raise SchemaError(f"counters: expected an object, got {_kind(counters)}")
    for name in ("seq", "ts", "progress", "eta_s", "last_error_ts"):
        value = obj[name]
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
            raise SchemaError(f"{name}: expected a number, got {_kind(value)}")
    return ServiceStatus(
        service=_string("service", obj["service"]),
        phase=_phase(obj["phase"]),
        progress=obj["progress"], eta_s=obj["eta_s"],
        detail=_string("detail", obj["detail"]), counters=counters,
        last_error=None if obj["last_error"] is None else _string("last_error", obj["last_error"]),
        last_error_ts=obj["last_error_ts"], events=_events(obj.get("events", [])),
        seq=obj["seq"], ts=obj["ts"])


def _events(value: Any) -> tuple[Event, ...]:
    if not isinstance(value, list):
        raise SchemaError(f"events: expected a list, got {_kind(value)}")
    if len(value) > MAX_EVENTS:
        raise SchemaError(f"events: at most {MAX_EVENTS}, got {len(value)}")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise SchemaError(f"events[]: expected an object, got {_kind(item)}")
        if "kind" not in item:
            raise SchemaError("events[].kind: missing")
        unknown = sorted(set(item) - _EVENT_FIELDS)
        if unknown:
            raise SchemaError(f"events[].{unknown[0]}: unknown field")
        out.append(Event(kind=_string("events[].kind", item["kind"]), count=item.get("count", 1),
                         detail=_string("events[].detail", item.get("detail", ""))))
    return tuple(out)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SchemaError(f"{key}: duplicate field")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise SchemaError(f"message: {name} is not a JSON number")


# --- field checks -------------------------------------------------------------------------
def check_service_name(name: object) -> str:
    """A service name: lower case, digits and '-', up to 32 chars (it names a socket file)."""
    if not isinstance(name, str) or not _SERVICE_RE.fullmatch(name):
        raise SchemaError(f"service: expected a name like 'indexer' ([a-z][a-z0-9-]{{0,31}}), "
                          f"got {name!r}")
    return name


def check_key(where: str, name: object) -> str:
    """A counter name or event kind: snake_case, up to 48 chars."""
    if not isinstance(name, str) or not _KEY_RE.fullmatch(name):
        raise SchemaError(f"{where}: expected a snake_case name ([a-z][a-z0-9_]{{0,47}}), "
                          f"got {name!r}")
    return name


def _phase(value: object) -> Phase:
    if isinstance(value, str):
        try:
            return Phase(value)
        except ValueError:
            pass
    known = ", ".join(p.value for p in Phase)
    raise SchemaError(f"phase: expected one of {known}, got {value!r}")


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _check_text(where: str, value: object, limit: int) -> None:
    if not isinstance(value, str):
        raise SchemaError(f"{where}: expected a string, got {_kind(value)}")
    if len(value) > limit:
        raise SchemaError(f"{where}: {len(value)} characters, over the limit of {limit}")
    bad = next((c for c in value if _unprintable(c)), None)
    if bad is not None:
        raise SchemaError(f"{where}: control or surrogate character {bad!r} (one line of text only)")


def _check_int(where: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where}: expected an integer, got {_kind(value)}")
    if not minimum <= value < _INT_LIMIT:
        raise SchemaError(f"{where}: must be in {minimum}..2^63-1, got {value}")


def _check_number(where: str, value: object, *, minimum: float,
                  maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(f"{where}: expected a number, got {_kind(value)}")
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"in {minimum:g}..{maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise SchemaError(f"{where}: must be a finite number {bounds}, got {value!r}")


def _check_counters(value: object) -> dict[str, int | float]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"counters: expected an object, got {_kind(value)}")
    if len(value) > MAX_COUNTERS:
        raise SchemaError(f"counters: at most {MAX_COUNTERS}, got {len(value)}")
    out: dict[str, int | float] = {}
    for name, number in value.items():
        check_key("counters", name)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise SchemaError(f"counters.{name}: expected a number, got {_kind(number)}")
        if isinstance(number, float) and not math.isfinite(number):
            raise SchemaError(f"counters.{name}: must be finite, got {number!r}")
        if abs(number) >= _INT_LIMIT:
            raise SchemaError(f"counters.{name}: magnitude must be below 2^63, got {number!r}")
        out[name] = number
    return out


def _unprintable(c: str) -> bool:
    code = ord(c)
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def clip_text(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Make any text fit a text field: one line, no control characters, ``limit`` chars.

    For error messages from exceptions, whose length and content a service does not
    control; the publisher applies it to ``detail`` and ``last_error``.
    """
    flat = "".join(" " if _unprintable(c) else c for c in text)
    flat = " ".join(flat.split())  # newlines became spaces; collapse the runs
    if len(flat) <= limit:
        return flat
    return flat[:max(0, limit - 1)] + "…"
