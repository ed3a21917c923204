"""The backup protocol's framing over a Noise (BOLT-08) stream.

A message is one Noise message holding a JSON object (the header, at most
:data:`MAX_HEADER` bytes), followed by ``header["size"]`` bytes of payload (0 if absent)
carried in as many further Noise messages as needed, each at most 65,535 bytes. Requests
carry ``"op"``; replies carry ``"ok"`` and, when false, ``"code"`` and ``"error"``. The
operations are listed in ``docs/backup.md``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..transport.noise import MAX_MESSAGE_SIZE
from ..transport.stream import NoiseStream

__all__ = ["MAX_HEADER", "PROTOCOL_VERSION", "WireError", "encode_header", "decode_header",
           "recv_header", "recv_payload", "send_message"]

PROTOCOL_VERSION = 1
MAX_HEADER = 4096


class WireError(ValueError):
    """The peer sent something that is not a well-formed message."""


def encode_header(header: dict[str, Any]) -> bytes:
    data = json.dumps(header, separators=(",", ":")).encode()
    if len(data) > MAX_HEADER:
        raise WireError(f"header of {len(data)} bytes exceeds {MAX_HEADER}")
    return data


def decode_header(message: bytes) -> dict[str, Any]:
    if len(message) > MAX_HEADER:
        raise WireError(f"header of {len(message)} bytes exceeds {MAX_HEADER}")
    try:
        header = json.loads(message)
    except (UnicodeDecodeError, ValueError):
        raise WireError("header is not JSON") from None
    if not isinstance(header, dict):
        raise WireError("header must be a JSON object")
    size = header.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WireError("size must be a non-negative integer")
    return header


async def send_message(stream: NoiseStream, header: dict[str, Any],
                       payload: Iterable[bytes] = ()) -> None:
    """Send a header (whose ``size`` must match) and its payload, chunked to Noise messages."""
    stream.write(encode_header(header))
    for part in payload:
        for i in range(0, len(part), MAX_MESSAGE_SIZE):
            stream.write(part[i:i + MAX_MESSAGE_SIZE])
            await stream.drain()
    await stream.drain()


async def recv_header(stream: NoiseStream, timeout: float | None = None) -> dict[str, Any]:
    return decode_header(await stream.recv(timeout=timeout))


async def recv_payload(stream: NoiseStream, size: int) -> AsyncIterator[bytes]:
    """The ``size`` payload bytes that follow a header, as they arrive."""
    left = size
    while left > 0:
        data = await stream.recv()
        if len(data) > left:
            raise WireError(f"payload longer than the announced {size} bytes")
        left -= len(data)
        yield data
