"""appliance.electrum.framing: newline framing with a bounded buffer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.electrum.framing import DEFAULT_MAX_LINE, LineFramer, OversizeLineError, frame


def test_LineFramer_splits_lines_across_chunks() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":') == []
    assert framer.buffered == 5
    assert framer.feed(b'1}\n{"b"') == [b'{"a":1}']
    assert framer.feed(b':2}\n\n{"c":3}\n') == [b'{"b":2}', b"", b'{"c":3}']
    assert framer.buffered == 0


def test_LineFramer_default_max_is_one_megabyte() -> None:
    assert LineFramer().max_size == DEFAULT_MAX_LINE == 1_000_000


def test_LineFramer_accepts_a_line_of_exactly_max_size() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    assert framer.feed(b"y" * 6) == []
    assert framer.feed(b"y" * 4 + b"\n") == [b"y" * 10]


def test_LineFramer_oversize_raises_before_the_newline_arrives() -> None:
    framer = LineFramer(10)
    framer.feed(b"x" * 8)
    with pytest.raises(OversizeLineError) as info:
        framer.feed(b"x" * 8)  # no newline yet: still refused, nothing kept
    assert info.value.max_size == 10 and info.value.complete == []
    assert framer.buffered == 0
    # The rest of the oversize line is dropped; the framer resynchronises on "\n".
    assert framer.feed(b"x" * 1000) == []
    assert framer.buffered == 0
    assert framer.feed(b"xx\nok\n") == [b"ok"]


def test_LineFramer_oversize_reports_the_lines_before_it_and_keeps_the_rest() -> None:
    framer = LineFramer(10)
    with pytest.raises(OversizeLineError) as info:
        framer.feed(b"one\ntwo\n" + b"z" * 20 + b"\nthree\nfou")
    assert info.value.complete == [b"one", b"two"]
    assert framer.feed(b"r\n") == [b"three", b"four"]


def test_LineFramer_memory_is_bounded_for_an_endless_line() -> None:
    framer = LineFramer(1000)
    for _ in range(100):
        try:
            framer.feed(b"a" * 333)
        except OversizeLineError:
            pass
        assert framer.buffered <= 1000


def test_frame_appends_newline_and_refuses_embedded_ones() -> None:
    assert frame(b"{}") == b"{}\n"
    with pytest.raises(ValueError):
        frame(b"{\n}")


def test_LineFramer_rejects_a_silly_max_size() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


@given(st.lists(st.binary(max_size=64), max_size=30))
def test_LineFramer_reassembles_any_chunking(chunks: list[bytes]) -> None:
    framer = LineFramer(10_000)
    lines: list[bytes] = []
    for chunk in chunks:
        lines += framer.feed(chunk)
    data = b"".join(chunks)
    assert lines == data.split(b"\n")[:-1]
    assert framer.buffered == len(data.split(b"\n")[-1])


@given(st.lists(st.binary(max_size=40), max_size=40), st.integers(1, 30))
def test_LineFramer_only_raises_oversize_and_never_returns_long_lines(
        chunks: list[bytes], max_size: int) -> None:
    framer = LineFramer(max_size)
    for chunk in chunks:
        try:
            lines = framer.feed(chunk)
        except OversizeLineError as exc:
            lines = exc.complete
        assert all(len(line) <= max_size and b"\n" not in line for line in lines)
        assert framer.buffered <= max_size + len(chunk)
