"""BIP158 basic filters: the official vectors, SipHash-2-4's, and a reference encoder."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.chain import hash_to_hex_str, hex_str_to_hash, parse_block
from appliance.indexer.bip158 import (
    FILTER_M,
    FILTER_P,
    MAX_FILTER_ELEMENTS,
    FilterDecodeError,
    GCSFilter,
    ScriptSet,
    filter_size,
    siphash24,
)

__all__: list[str] = []

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "bip158" / "blockfilters.json"
OP_RETURN = 0x6A


# --- a reference encoder (tests only): the obvious bit-string construction ----------------------
def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def encode_values(values: list[int]) -> bytes:
    """CompactSize(N) then the Golomb-Rice coded deltas of the sorted values, zero padded."""
    bits: list[str] = []
    prev = 0
    for v in sorted(values):
        q, r = divmod(v - prev, 1 << FILTER_P)
        bits.append("1" * q + "0" + format(r, f"0{FILTER_P}b"))
        prev = v
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    payload = int(s, 2).to_bytes(len(s) // 8, "big") if s else b""
    return compact_size(len(values)) + payload


def element_value(block_hash: bytes, n: int, item: bytes) -> int:
    return (siphash24(block_hash[:16], item) * n * FILTER_M) >> 64


def build_filter(block_hash: bytes, items: set[bytes]) -> tuple[bytes, list[int]]:
    """(encoded filter, its sorted values) for a set of items, as BIP158 builds it."""
    values = sorted(element_value(block_hash, len(items), i) for i in items)
    return encode_values(values), values


# --- the official vectors (Bitcoin Core's src/test/data/blockfilters.json) ------------------------
def _vector_rows() -> list[list[Any]]:
    rows: list[list[Any]] = json.loads(VECTORS.read_text())
    return [r for r in rows if len(r) > 1]  # the first row is a header


def _dsha256(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


@pytest.fixture(params=_vector_rows(), ids=lambda r: f"{r[0]}-{r[7] or 'plain'}")
def vector(request: pytest.FixtureRequest) -> dict[str, Any]:
    height, hash_hex, block_hex, prev_scripts, prev_header, filter_hex, header, note = (
        request.param)
    block = parse_block(bytes.fromhex(block_hex))
    assert hash_to_hex_str(block.hash) == hash_hex  # the data file is intact
    # The filter header chain: also proves the filter hex was stored without a typo.
    assert _dsha256(_dsha256(bytes.fromhex(filter_hex)) + hex_str_to_hash(prev_header)) == (
        hex_str_to_hash(header))
    outputs = [o.script_pubkey for tx in block.txs for o in tx.outputs]
    prevouts = [bytes.fromhex(s) for s in prev_scripts]
    # BIP158: output scripts except empty and OP_RETURN ones; every non-empty spent script.
    elements = {s for s in outputs if s and s[0] != OP_RETURN} | {s for s in prevouts if s}
    return {"height": height, "hash": block.hash, "filter": filter_hex, "outputs": outputs,
            "prevouts": prevouts, "elements": elements, "note": note}


def test_vector_decodes_to_n_elements(vector: dict[str, Any]) -> None:
    f = GCSFilter.from_hex(vector["hash"], vector["filter"])
    assert f.n == len(f) == len(vector["elements"])
    assert len(f.filter_elements()) == f.n


def test_filter_size_reads_n_without_decoding(vector: dict[str, Any]) -> None:
    assert filter_size(vector["filter"]) == len(vector["elements"])


def test_filter_size_of_wide_counts_and_garbage() -> None:
    assert filter_size("fd0001" + "00" * 40) == 256
    for bad in ("", "zz", "fd01"):  # empty, not hex, truncated
        with pytest.raises(FilterDecodeError):
            filter_size(bad)


def test_vector_values_are_exactly_the_block_elements(vector: dict[str, Any]) -> None:
    f = GCSFilter.from_hex(vector["hash"], vector["filter"])
    expected = sorted(f.hash_to_range(s) for s in vector["elements"])
    assert f.filter_elements() == expected
    assert build_filter(vector["hash"], vector["elements"])[0].hex() == vector["filter"]


def test_vector_matches_every_script_of_the_block(vector: dict[str, Any]) -> None:
    f = GCSFilter.from_bytes(vector["hash"], bytes.fromhex(vector["filter"]))
    for script in vector["elements"]:
        assert f.match_any([script]), script.hex()
    assert f.match_set(vector["outputs"] + vector["prevouts"]) == vector["elements"]
    assert f.match_any(ScriptSet(vector["elements"])) is bool(vector["elements"])


def test_vector_key_is_the_internal_byte_order(vector: dict[str, Any]) -> None:
    # The RPC's display order (reversed) keys SipHash differently: nothing would match.
    wrong = GCSFilter.from_hex(vector["hash"][::-1], vector["filter"])
    assert not wrong.match_any(vector["elements"])


def test_vectors_exercise_the_exclusion_rules() -> None:
    # The exact-values test above only proves the BIP158 element rules if the vectors hold
    # scripts those rules leave out.
    outputs: list[bytes] = []
    prevouts: list[str] = []
    for row in _vector_rows():
        outputs += [o.script_pubkey for tx in parse_block(bytes.fromhex(row[2])).txs
                    for o in tx.outputs]
        prevouts += row[3]
    assert any(s[:1] == bytes((OP_RETURN,)) for s in outputs)
    assert b"" in outputs and "" in prevouts
    assert len(prevouts) != len(set(prevouts))  # duplicates count once


def test_empty_filter_matches_nothing() -> None:
    f = GCSFilter.from_hex(bytes(32), "00")
    assert f.n == 0 and f.filter_elements() == []
    assert not f.match_any([b"", b"\x00\x14" + bytes(20)])
    assert f.match_set([b"\x51"]) == set()


def test_no_query_scripts_matches_nothing() -> None:
    data, _ = build_filter(bytes(32), {b"a", b"b"})
    f = GCSFilter.from_bytes(bytes(32), data)
    assert not f.match_any([])
    assert f.match_set(ScriptSet([])) == set()


# --- SipHash-2-4: the reference vectors (veorq/SipHash vectors.h, key 00..0f, msg 00..n-1) ----
SIPHASH_VECTORS = """
310e0edd47db6f72 fd67dc93c539f874 5a4fa9d909806c0d 2d7efbd796666785
b7877127e09427cf 8da699cd64557618 cee3fe586e46c9cb 37d1018bf50002ab
6224939a79f5f593 b0e4a90bdf82009e f3b9dd94c5bb5d7a a7ad6b22462fb3f4
fbe50e86bc8f1e75 903d84c02756ea14 eef27a8e90ca23f7 e545be4961ca29a1
db9bc2577fcc2a3f 9447be2cf5e99a69 9cd38d96f0b3c14b bd6179a71dc96dbb
98eea21af25cd6be c7673b2eb0cbf2d0 883ea3e395675393 c8ce5ccd8c030ca8
94af49f6c650adb8 eab8858ade92e1bc f315bb5bb835d817 adcf6b0763612e2f
a5c91da7acaa4dde 716595876650a2a6 28ef495c53a387ad 42c341d8fa92d832
ce7cf2722f512771 e37859f94623f3a7 381205bb1ab0e012 ae97a10fd434e015
b4a31508beff4d31 81396229f0907902 4d0cf49ee5d4dcca 5c73336a76d8bf9a
d0a704536ba93e0e 925958fcd6420cad a915c29bc8067318 952b79f3bc0aa6d4
f21df2e41d4535f9 87577519048f53a9 10a56cf5dfcd9adb eb75095ccd986cd0
51a9cb9ecba312e6 96afadfc2ce666c7 72fe52975a4364ee 5a1645b276d592a1
b274cb8ebf87870a 6f9bb4203de7b381 eaecb2a30b22a87f 9924a43cc1315724
bd838d3aafbf8db7 0b1a2a3265d51aea 135079a3231ce660 932b2846e4d70666
e1915f5cb1eca46c f325965ca16d629f 575ff28e60381be5 724506eb4c328a95
""".split()
SIP_KEY = bytes(range(16))


@pytest.mark.parametrize("length", range(64))
def test_siphash24_reference_vectors(length: int) -> None:
    assert siphash24(SIP_KEY, bytes(range(length))).to_bytes(8, "little").hex() == (
        SIPHASH_VECTORS[length])


def test_lane_parallel_siphash_matches_reference_vectors() -> None:
    messages = [bytes(range(n)) for n in range(64)]
    query = ScriptSet(messages)
    got = dict(zip(query.scripts, query.hashes(SIP_KEY), strict=True))
    for n, msg in enumerate(messages):
        assert got[msg].to_bytes(8, "little").hex() == SIPHASH_VECTORS[n]


def test_siphash_rejects_bad_keys() -> None:
    with pytest.raises(ValueError):
        siphash24(bytes(15), b"")
    with pytest.raises(ValueError):
        ScriptSet([b"x"]).hashes(bytes(17))


def test_lane_chunks_beyond_one_big_int() -> None:
    rng = random.Random(7)
    scripts = [b"\x00\x14" + rng.randbytes(20) for _ in range(5000)]
    scripts += [rng.randbytes(rng.randrange(0, 80)) for _ in range(300)]
    key = rng.randbytes(16)
    query = ScriptSet(scripts)
    assert len(query) == len(set(scripts))
    hashes = query.hashes(key)
    for i in rng.sample(range(len(query)), 400):
        assert hashes[i] == siphash24(key, query.scripts[i])


def test_script_set_dedups_and_rejects_non_bytes() -> None:
    q = ScriptSet([b"ab", bytearray(b"ab"), memoryview(b"cd")])  # type: ignore[list-item]
    assert sorted(q) == [b"ab", b"cd"] and b"ab" in q and len(q) == 2
    with pytest.raises(TypeError):
        ScriptSet([5])  # type: ignore[list-item]


def test_script_set_grown_a_few_at_a_time_hashes_like_a_fresh_one() -> None:
    # The backfill extends its query as the gap moves (a few scripts per block): the
    # extended set must hash every script as a fresh set does, and stay a few lanes.
    rng = random.Random(11)
    key = rng.randbytes(16)
    query = ScriptSet([b"\x00\x14" + rng.randbytes(20) for _ in range(20)])
    added: list[bytes] = list(query)
    for step in range(400):
        new = [b"\x00\x14" + rng.randbytes(20) for _ in range(rng.randrange(1, 6))]
        if step % 50 == 0:
            new += [rng.randbytes(rng.randrange(0, 60)), added[0]]  # other sizes, a dup
        query = query.extended(new)
        added += new
    assert set(query) == set(added) and len(query) == len(set(added))
    assert all(s in query for s in added)
    assert query.hashes(key) == [siphash24(key, s) for s in query.scripts]
    assert len(query._lanes) <= 40  # O(log n) per size, not one lane per growth


@settings(max_examples=60, deadline=None)
@given(first=st.lists(st.binary(max_size=70), max_size=30),
       more=st.lists(st.lists(st.binary(max_size=70), max_size=12), max_size=6),
       key=st.binary(min_size=16, max_size=16))
def test_extended_script_set_equals_scalar(first: list[bytes], more: list[list[bytes]],
                                           key: bytes) -> None:
    query = ScriptSet(first)
    for batch in more:
        query = query.extended(batch)
    everything = set(first).union(*more)
    assert set(query.scripts) == everything and len(query) == len(everything)
    assert query.hashes(key) == [siphash24(key, s) for s in query.scripts]


# --- property tests against the reference encoder ---------------------------------------------
scripts_st = st.sets(st.binary(min_size=1, max_size=90), min_size=1, max_size=120)
hash_st = st.binary(min_size=32, max_size=32)


@settings(max_examples=120, deadline=None)
@given(items=scripts_st, block_hash=hash_st)
def test_built_filter_matches_all_members(items: set[bytes], block_hash: bytes) -> None:
    data, values = build_filter(block_hash, items)
    f = GCSFilter.from_bytes(block_hash, data)
    assert f.n == len(items)
    assert f.filter_elements() == values
    assert f.match_set(items) == items
    assert all(f.match_any([i]) for i in items)


@settings(max_examples=60, deadline=None)
@given(items=scripts_st, others=scripts_st, block_hash=hash_st)
def test_non_members_rarely_match(items: set[bytes], others: set[bytes],
                                  block_hash: bytes) -> None:
    data, _ = build_filter(block_hash, items)
    f = GCSFilter.from_bytes(block_hash, data)
    strangers = others - items
    matched = f.match_set(items | strangers)
    assert items <= matched
    # Each stranger is a false positive with probability ~1/M: two would be a ~1e-8 event.
    assert len(matched - items) <= 1
    assert f.match_any(strangers) == bool(matched - items)


@settings(max_examples=100, deadline=None)
@given(scripts=st.lists(st.binary(max_size=70), max_size=40), key=st.binary(min_size=16,
                                                                          max_size=16))
def test_lane_parallel_siphash_equals_scalar(scripts: list[bytes], key: bytes) -> None:
    query = ScriptSet(scripts)
    assert set(query.scripts) == set(scripts)
    assert query.hashes(key) == [siphash24(key, s) for s in query.scripts]


@settings(max_examples=80, deadline=None)
@given(gaps=st.lists(st.integers(0, 1 << 40), min_size=1, max_size=30))
def test_decoder_takes_any_gap_width(gaps: list[int]) -> None:
    # Gaps of 2**32 and more leave the 32-bit fast path; no real filter has them.
    values = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    f = GCSFilter.from_bytes(bytes(32), encode_values(values))
    assert f.filter_elements() == values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=scripts_st, block_hash=hash_st, cut=st.integers(1, 50))
def test_truncated_filter_raises(items: set[bytes], block_hash: bytes, cut: int) -> None:
    data, _ = build_filter(block_hash, items)
    with pytest.raises(FilterDecodeError):
        GCSFilter.from_bytes(block_hash, data[: max(0, len(data) - cut)])


@settings(max_examples=100, deadline=None)
@given(items=scripts_st, block_hash=hash_st, extra=st.binary(min_size=1, max_size=40))
def test_excess_bytes_raise(items: set[bytes], block_hash: bytes, extra: bytes) -> None:
    data, _ = build_filter(block_hash, items)
    with pytest.raises(FilterDecodeError):
        GCSFilter.from_bytes(block_hash, data + extra)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_the_defined_error(data: bytes) -> None:
    try:
        f = GCSFilter.from_bytes(bytes(32), data)
    except FilterDecodeError:
        return
    # Whatever decodes re-encodes to the same bytes, up to the padding bits.
    if f.n == 0:
        assert data == b"\x00"
    else:
        assert encode_values(f.filter_elements())[:-1] == data[:-1]


@pytest.mark.parametrize("hex_data, reason", [
    ("", "empty"),
    ("01", "short"),
    ("0100", "short"),
    ("00ff", "excess"),
    ("fd", "truncated"),
    ("fd0100", "canonical"),
    ("fe01000000", "canonical"),
    ("ff0100000000000000", "canonical"),
    ("fe01000002" + "00" * 10, "more than"),
    ("02ffff", "short"),
    ("zz", "not hex"),
])
def test_malformed_filters_raise(hex_data: str, reason: str) -> None:
    with pytest.raises(FilterDecodeError, match=reason):
        GCSFilter.from_hex(bytes(32), hex_data)


def test_unary_run_without_end_raises() -> None:
    # N=1 and nothing but ones: the quotient never ends.
    with pytest.raises(FilterDecodeError):
        GCSFilter.from_bytes(bytes(32), b"\x01" + b"\xff" * 5000)
    assert issubclass(FilterDecodeError, ValueError)


def test_n_limit_matches_core() -> None:
    assert MAX_FILTER_ELEMENTS == 0x02000000
    with pytest.raises(FilterDecodeError, match="more than"):
        GCSFilter.from_bytes(bytes(32), compact_size(MAX_FILTER_ELEMENTS + 1))


def test_block_hash_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        GCSFilter.from_hex(bytes(31), "00")
