"""Compact sizes, ByteReader, hashing and hex helpers."""

from __future__ import annotations

import array
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.chain.encoding import (
    ByteReader,
    ChainParseError,
    double_sha256,
    hash_to_hex_str,
    hex_str_to_hash,
    read_varint,
    sha256,
    varint_size,
    write_varbytes,
    write_varint,
)

GENESIS_HASH_HEX = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"

VARINT_VECTORS = [
    (0, "00"),
    (1, "01"),
    (0xFC, "fc"),
    (0xFD, "fdfd00"),
    (0xFFFF, "fdffff"),
    (0x10000, "fe00000100"),
    (0xFFFFFFFF, "feffffffff"),
    (0x100000000, "ff0000000001000000"),
    ((1 << 64) - 1, "ffffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINT_VECTORS)
def test_varint_vectors(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert write_varint(value) == raw
    assert varint_size(value) == len(raw)
    assert read_varint(raw) == (value, len(raw))
    assert ByteReader(raw).read_varint() == value


@pytest.mark.parametrize(
    "encoded",
    ["fdfc00", "fd0000", "feffff0000", "fe00000000", "ffffffffff00000000", "ff0000000000000000"],
)
def test_non_canonical_varint_rejected(encoded: str) -> None:
    with pytest.raises(ChainParseError, match="non-canonical"):
        read_varint(bytes.fromhex(encoded))


@pytest.mark.parametrize("encoded", ["", "fd", "fd00", "fe000001", "ff00000000000000"])
def test_truncated_varint(encoded: str) -> None:
    with pytest.raises(ChainParseError, match="truncated"):
        read_varint(bytes.fromhex(encoded))


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_write_varint_range(value: int) -> None:
    with pytest.raises(ValueError):
        write_varint(value)


def test_read_varint_negative_offset() -> None:
    with pytest.raises(ChainParseError):
        read_varint(b"\x01\x02", -1)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1), st.binary(max_size=8))
def test_varint_round_trip(value: int, prefix: bytes) -> None:
    encoded = write_varint(value)
    assert len(encoded) == varint_size(value)
    assert read_varint(prefix + encoded + b"\xaa", len(prefix)) == (
        value,
        len(prefix) + len(encoded),
    )


@given(st.binary(min_size=1, max_size=12))
def test_varint_decode_then_encode_is_identity(data: bytes) -> None:
    # Only canonical forms decode, so whatever decodes re-encodes to the same bytes.
    try:
        value, end = read_varint(data)
    except ChainParseError:
        return
    assert write_varint(value) == data[:end]


_FIELD = st.one_of(
    st.tuples(st.just("u8"), st.integers(0, 0xFF)),
    st.tuples(st.just("u16"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("u32"), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("i32"), st.integers(-(1 << 31), (1 << 31) - 1)),
    st.tuples(st.just("u64"), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("i64"), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.tuples(st.just("varint"), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("varbytes"), st.binary(max_size=300)),
    st.tuples(st.just("bytes"), st.binary(max_size=40)),
)
_FORMATS = {"u8": "<B", "u16": "<H", "u32": "<I", "i32": "<i", "u64": "<Q", "i64": "<q"}


def _encode_field(kind: str, value: object) -> bytes:
    if kind in _FORMATS:
        return struct.pack(_FORMATS[kind], value)
    if kind == "varint":
        assert isinstance(value, int)
        return write_varint(value)
    assert isinstance(value, bytes)
    return write_varbytes(value) if kind == "varbytes" else value


def _read_field(reader: ByteReader, kind: str, value: object) -> object:
    if kind == "bytes":
        assert isinstance(value, bytes)
        return reader.read_bytes(len(value))
    reads = {
        "u8": reader.read_u8,
        "u16": reader.read_u16,
        "u32": reader.read_u32,
        "i32": reader.read_i32,
        "u64": reader.read_u64,
        "i64": reader.read_i64,
        "varint": reader.read_varint,
        "varbytes": reader.read_varbytes,
    }
    return reads[kind]()


@given(st.lists(_FIELD, max_size=20), st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_byte_reader_round_trip(fields: list[tuple[str, object]], source: str) -> None:
    blob = b"".join(_encode_field(kind, value) for kind, value in fields)
    data: bytes | bytearray | memoryview = blob
    if source == "bytearray":
        data = bytearray(blob)
    elif source == "memoryview":
        data = memoryview(b"\x00" + blob)[1:]
    reader = ByteReader(data)
    offsets = []
    for kind, value in fields:
        assert _read_field(reader, kind, value) == value
        offsets.append(reader.offset)
    assert reader.at_end()
    assert reader.offset == len(blob)
    reader.expect_end()
    # Every read consumed exactly its own encoding.
    expected = 0
    for (kind, value), offset in zip(fields, offsets, strict=True):
        expected += len(_encode_field(kind, value))
        assert offset == expected


@given(st.lists(_FIELD, min_size=1, max_size=10), st.data())
def test_byte_reader_truncation_raises_chain_parse_error(
    fields: list[tuple[str, object]], data: st.DataObject
) -> None:
    blob = b"".join(_encode_field(kind, value) for kind, value in fields)
    cut = data.draw(st.integers(0, max(len(blob) - 1, 0)))
    reader = ByteReader(blob[:cut])
    if not blob:
        return
    with pytest.raises(ChainParseError):
        for kind, value in fields:
            _read_field(reader, kind, value)
        reader.expect_end()  # only reached when every field fit, i.e. never: blob was cut


def test_byte_reader_basics() -> None:
    reader = ByteReader(b"\x01\x02\x03\x04\x05\x06", offset=1)
    assert reader.offset == 1
    assert reader.remaining == 5
    assert reader.read_u8() == 2
    reader.skip(2)
    assert reader.offset == 4
    with pytest.raises(ChainParseError, match="trailing"):
        reader.expect_end()
    with pytest.raises(ChainParseError, match="truncated"):
        reader.read_u32()
    assert reader.offset == 4  # a failed read leaves the position alone
    assert reader.read_bytes(2) == b"\x05\x06"
    assert reader.at_end()
    reader.seek(0)
    assert reader.read_u16() == 0x0201
    with pytest.raises(ChainParseError):
        reader.seek(7)
    with pytest.raises(ChainParseError):
        reader.skip(-1)
    with pytest.raises(ChainParseError):
        ByteReader(b"", offset=1)


def test_read_view_is_zero_copy() -> None:
    source = bytearray(b"abcdef")
    reader = ByteReader(source)
    reader.skip(1)
    view = reader.read_view(3)
    assert view.obj is source
    assert bytes(view) == b"bcd"
    varbytes = ByteReader(b"\x02xyz").read_varbytes_view()
    assert bytes(varbytes) == b"xy"


def test_byte_reader_over_non_byte_buffer() -> None:
    words = array.array("I", [0x04030201, 0x08070605])
    reader = ByteReader(memoryview(words))
    assert reader.remaining == 8
    assert reader.read_u32() == 0x04030201
    assert reader.read_u8() == 5


def test_hashes() -> None:
    assert sha256(b"abc") == hashlib.sha256(b"abc").digest()
    assert double_sha256(b"").hex() == (
        "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
    )
    assert double_sha256(memoryview(b"abc")) == double_sha256(b"abc")


def test_hex_helpers() -> None:
    internal = hex_str_to_hash(GENESIS_HASH_HEX)
    assert internal[:4] == bytes.fromhex("6fe28c0a")
    assert internal[-4:] == bytes(4)
    assert hash_to_hex_str(internal) == GENESIS_HASH_HEX
    assert hash_to_hex_str(memoryview(internal)) == GENESIS_HASH_HEX
    with pytest.raises(ChainParseError):
        hex_str_to_hash("zz")
    with pytest.raises(ValueError):
        hex_str_to_hash("abc")


@given(st.binary(max_size=64))
def test_hex_round_trip(raw: bytes) -> None:
    assert hex_str_to_hash(hash_to_hex_str(raw)) == raw
    assert hash_to_hex_str(raw) == raw[::-1].hex()
