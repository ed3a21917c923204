"""supervisord's event listener protocol, as pure functions: bytes in, events out, no I/O.

The protocol (supervisord docs, "Events"): the listener writes ``READY\\n``; supervisord
sends one header line of ``key:value`` tokens, one of which is ``len``, then exactly
``len`` bytes of payload; the listener answers ``RESULT 2\\nOK`` (or ``FAIL``) and writes
``READY\\n`` again before the next event comes. A ``PROCESS_STATE_*`` payload is one line
of ``key:value`` tokens naming the process and the state it came from.

Kept free of I/O so every byte-level case is unit-tested; :mod:`.service` does the pipes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACK",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "READY",
    "EventReader",
    "ProcessStateEvent",
    "ProtocolError",
    "RawEvent",
    "parse_process_state",
    "parse_tokens",
]

#: Written once at start and again after every result.
READY = b"READY\n"
#: The result for an event we handled: "RESULT <len>\n" then the body "OK".
ACK = b"RESULT 2\nOK"

# A real header is about 100 bytes. A longer line without a newline means we are out of
# step with supervisord (or reading something else): fail loudly instead of buffering.
MAX_HEADER_BYTES = 4096
# PROCESS_STATE payloads are ~100 bytes; other event types we never subscribe to can
# carry captured output (up to the capture buffer). 1 MiB bounds memory on a 1 GB Pi.
MAX_PAYLOAD_BYTES = 1 << 20

_STATE_PREFIX = "PROCESS_STATE_"


class ProtocolError(ValueError):
    """supervisord sent something this listener cannot read; it should exit and be restarted."""


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One event as framed by supervisord: the header tokens and the payload bytes."""

    headers: dict[str, str]
    payload: bytes

    @property
    def eventname(self) -> str:
        return self.headers["eventname"]


@dataclass(frozen=True, slots=True)
class ProcessStateEvent:
    """A ``PROCESS_STATE_<STATE>`` event about one process."""

    state: str  # the new state: RUNNING, BACKOFF, FATAL, EXITED, STARTING, STOPPED ...
    process: str  # processname
    group: str  # groupname (the [program:x] name)
    from_state: str
    tries: int | None = None  # STARTING/BACKOFF: start attempts so far
    expected: bool | None = None  # EXITED: the exit code was in exitcodes
    pid: int | None = None  # RUNNING/EXITED/STOPPING

    @property
    def namespec(self) -> str:
        """The name supervisorctl and the XML-RPC interface use for this process."""
        return self.group if self.group == self.process else f"{self.group}:{self.process}"


def parse_tokens(line: str, where: str) -> dict[str, str]:
    """``"a:1 b:2"`` -> ``{"a": "1", "b": "2"}``; a token without ``:`` is an error."""
    out: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition(":")
        if not sep or not key:
            raise ProtocolError(f"{where}: bad token {token[:40]!r}")
        out[key] = value
    return out


class EventReader:
    """Reassembles events from whatever chunks the pipe delivers.

    ``feed(chunk)`` returns the events completed by it (normally zero or one, because
    supervisord sends the next event only after our result). Split headers, split
    payloads and several events in one chunk all work.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None
        self._need = 0

    def feed(self, chunk: bytes) -> list[RawEvent]:
        self._buf += chunk
        out: list[RawEvent] = []
        while True:
            if self._headers is None:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        raise ProtocolError(f"header: no newline in {len(self._buf)} bytes")
                    return out
                if nl > MAX_HEADER_BYTES:
                    raise ProtocolError(f"header: {nl} bytes is too long")
                line = bytes(self._buf[:nl]).decode("utf-8", "replace")
                del self._buf[:nl + 1]
                self._headers, self._need = _header(line)
            if len(self._buf) < self._need:
                return out
            payload = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            out.append(RawEvent(self._headers, payload))
            self._headers = None

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete event (0 between events)."""
        return len(self._buf)


def _header(line: str) -> tuple[dict[str, str], int]:
    headers = parse_tokens(line, "header")
    if "eventname" not in headers:
        raise ProtocolError(f"header: no eventname in {line[:80]!r}")
    raw_len = headers.get("len", "")
    if not raw_len.isdigit():
        raise ProtocolError(f"header: bad len {raw_len[:20]!r}")
    length = int(raw_len)
    if length > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"header: len {length} is over {MAX_PAYLOAD_BYTES}")
    return headers, length


def parse_process_state(event: RawEvent) -> ProcessStateEvent | None:
    """The event as a :class:`ProcessStateEvent`, or None when it is another event type.

    Raises :class:`ProtocolError` when a PROCESS_STATE payload lacks the names.
    """
    name = event.eventname
    if not name.startswith(_STATE_PREFIX):
        return None
    # The first line holds the tokens; state events have no body after it.
    first = event.payload.split(b"\n", 1)[0].decode("utf-8", "replace")
    tokens = parse_tokens(first, name)
    try:
        process, group = tokens["processname"], tokens["groupname"]
    except KeyError as exc:
        raise ProtocolError(f"{name}: payload has no {exc.args[0]}") from None
    return ProcessStateEvent(
        state=name[len(_STATE_PREFIX):], process=process, group=group,
        from_state=tokens.get("from_state", ""), tries=_int(tokens.get("tries")),
        expected=None if "expected" not in tokens else tokens["expected"] == "1",
        pid=_int(tokens.get("pid")))


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
