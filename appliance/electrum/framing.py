"""Newline-delimited message framing for stream transports (TCP, TLS). Pure, no I/O.

Each Electrum message is one line of JSON ending in ``\\n``; JSON forbids raw control
characters inside strings, so a newline can only be a delimiter. The framer keeps at
most ``max_size`` bytes of an unfinished line: a longer line raises
:class:`OversizeLineError` as soon as it is known to be too long, without waiting for
(or buffering) the rest of it.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_LINE", "LineFramer", "OversizeLineError", "frame"]

#: A normal request is ~150 bytes; a large raw transaction is ~800 kB of hex.
DEFAULT_MAX_LINE = 1_000_000


class OversizeLineError(Exception):
    """A line longer than ``max_size`` bytes (newline not counted).

    ``complete`` holds the whole lines that preceded it in the same ``feed`` call, so a
    caller can still answer them before it reports the error.
    """

    def __init__(self, max_size: int, complete: list[bytes]) -> None:
        super().__init__(f"message over {max_size:,d} bytes")
        self.max_size = max_size
        self.complete = complete


def frame(message: bytes) -> bytes:
    """The bytes to send for one message."""
    if b"\n" in message:
        raise ValueError("a framed message cannot contain a newline")
    return message + b"\n"


class LineFramer:
    """Turns received byte chunks into complete lines (without their ``\\n``).

    After an oversize line the framer drops bytes up to the next newline and carries
    on, so it stays usable; the Electrum session disconnects anyway.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_LINE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False
        self._rest = b""  # bytes after an oversize line, read on the next feed

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line held in memory."""
        return self._size + len(self._rest)

    def feed(self, data: bytes) -> list[bytes]:
        if self._rest:
            data, self._rest = self._rest + data, b""
        lines: list[bytes] = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            stop = end if newline < 0 else newline
            if self._skipping:
                if newline < 0:
                    return lines
                self._skipping = False
                start = newline + 1
                continue
            size = self._size + stop - start
            if size > self.max_size:
                self._parts.clear()
                self._size = 0
                self._skipping = newline < 0
                if newline >= 0:
                    self._rest = data[newline + 1:]
                raise OversizeLineError(self.max_size, lines)
            if newline < 0:
                # Keep slices, not a growing bytes object: joining once is linear.
                self._parts.append(data[start:])
                self._size = size
                return lines
            if self._parts:
                self._parts.append(data[start:newline])
                lines.append(b"".join(self._parts))
                self._parts.clear()
                self._size = 0
            else:
                lines.append(data[start:newline])
            start = newline + 1
        return lines
