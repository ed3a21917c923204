"""BOLT #8 transport, pure layer: every Appendix A vector, state machine misuse, fuzzing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.identity import NodeKey
from appliance.transport.noise import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    HEADER_SIZE,
    MAC_SIZE,
    MAX_MESSAGE_SIZE,
    ActLengthError,
    BadPublicKeyError,
    BadTagError,
    BadVersionError,
    CipherState,
    DecryptionError,
    FrameDecoder,
    FrameError,
    FrameLengthError,
    FrameTooLargeError,
    HandshakeError,
    Initiator,
    Keypair,
    MessageTooLargeError,
    NoiseError,
    NoiseSession,
    Responder,
    SessionFailedError,
    hkdf_two_keys,
    validate_public_key,
)

__all__: list[str] = []

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "bolt08"

ERROR_CLASSES: dict[str, type[HandshakeError]] = {
    "READ_FAILED": ActLengthError,
    "BAD_VERSION": BadVersionError,
    "BAD_PUBKEY": BadPublicKeyError,
    "BAD_TAG": BadTagError,
    "BAD_CIPHERTEXT": BadTagError,
}


def load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["vectors"]
    return vectors


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def expect_error(vec: dict[str, Any], exc: HandshakeError) -> None:
    code = vec["error"].split()[0]  # "ACT2_BAD_VERSION 1" -> "ACT2_BAD_VERSION"
    assert exc.code == code
    assert isinstance(exc, ERROR_CLASSES[code.split("_", 1)[1]])
    assert isinstance(exc, ValueError)
    if isinstance(exc, BadVersionError):
        assert exc.version != 0
        if " " in vec["error"]:  # "ACT2_BAD_VERSION 1" names the version
            assert exc.version == int(vec["error"].split()[1])


def pair(max_message_size: int = MAX_MESSAGE_SIZE) -> tuple[NoiseSession, NoiseSession]:
    """A fresh initiator session and responder session that completed a handshake."""
    alice, bob = Keypair.generate(), Keypair.generate()
    ini = Initiator(alice, bob.public, max_message_size=max_message_size)
    res = Responder(bob, max_message_size=max_message_size)
    act3 = ini.read_act_two(res.read_act_one(ini.act_one()))
    return ini.session, res.read_act_three(act3)


# --- Appendix A -------------------------------------------------------------------------------------
def test_vector_files_cover_appendix_a() -> None:
    assert len(load("initiator.json")) == 5
    assert len(load("responder.json")) == 10
    assert {v["error"] for v in load("responder.json")} >= {
        None, "ACT1_READ_FAILED", "ACT1_BAD_VERSION", "ACT1_BAD_PUBKEY", "ACT1_BAD_TAG",
        "ACT3_BAD_VERSION 1", "ACT3_READ_FAILED", "ACT3_BAD_CIPHERTEXT", "ACT3_BAD_PUBKEY", "ACT3_BAD_TAG"}


@pytest.mark.parametrize("vec", load("initiator.json"), ids=lambda v: v["name"])
def test_initiator_vectors(vec: dict[str, Any]) -> None:
    local = Keypair(h(vec["ls_priv"]))
    eph = Keypair(h(vec["e_priv"]))
    assert local.public == h(vec["ls_pub"])
    assert eph.public == h(vec["e_pub"])
    ini = Initiator(local, h(vec["rs_pub"]), ephemeral=eph)
    assert ini.act_one() == h(vec["act_one"])
    if vec["error"] is None:
        assert ini.read_act_two(h(vec["act_two"])) == h(vec["act_three"])
        session = ini.session
        assert session.send_cipher.key == h(vec["sk"])
        assert session.recv_cipher.key == h(vec["rk"])
        assert session.handshake_hash == h(vec["h_final"])
        assert session.remote_static == h(vec["rs_pub"])
        assert session.initiator
    else:
        with pytest.raises(HandshakeError) as info:
            ini.read_act_two(h(vec["act_two"]))
        expect_error(vec, info.value)
        assert info.value.act == 2
        assert not ini.complete
        with pytest.raises(RuntimeError):
            ini.session  # noqa: B018 - the property is the test
        with pytest.raises(RuntimeError):  # a failed handshake cannot be resumed
            ini.read_act_two(h(vec["act_two"]))


@pytest.mark.parametrize("vec", load("responder.json"), ids=lambda v: v["name"])
def test_responder_vectors(vec: dict[str, Any]) -> None:
    local = Keypair(h(vec["ls_priv"]))
    assert local.public == h(vec["ls_pub"])
    res = Responder(local, ephemeral=Keypair(h(vec["e_priv"])))
    failing_act = int(vec["error"][3]) if vec["error"] else 0
    if failing_act == 1:
        with pytest.raises(HandshakeError) as info:
            res.read_act_one(h(vec["act_one"]))
        expect_error(vec, info.value)
        assert info.value.act == 1
        return
    assert res.read_act_one(h(vec["act_one"])) == h(vec["act_two"])
    if failing_act == 3:
        with pytest.raises(HandshakeError) as info:
            res.read_act_three(h(vec["act_three"]))
        expect_error(vec, info.value)
        assert info.value.act == 3
        with pytest.raises(RuntimeError):
            res.remote_static  # noqa: B018 - nobody may read a key that was not authenticated
        return
    session = res.read_act_three(h(vec["act_three"]))
    assert res.remote_static == session.remote_static == h(vec["rs_decrypted"])
    assert session.recv_cipher.key == h(vec["rk"])
    assert session.send_cipher.key == h(vec["sk"])
    assert session.handshake_hash == h(vec["h_final"])
    assert not session.initiator


@pytest.mark.parametrize("vec", load("hkdf.json"), ids=lambda v: v["salt"][:8] + "/" + v["ikm"][:8])
def test_hkdf_vectors(vec: dict[str, Any]) -> None:
    assert hkdf_two_keys(h(vec["salt"]), h(vec["ikm"])) == (h(vec["out1"]), h(vec["out2"]))


def test_ecdh_is_sha256_of_compressed_point() -> None:
    # From the vectors' trace: ss = ECDH(rs, e.priv) of act one.
    e = Keypair(h("12" * 32))
    rs = h("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7")
    assert e.ecdh(rs) == h("1e2fb3c8fe8fb9f262f649f64d26ecf0f2c0a805a767cf02dc2d77a6ef1fdcc3")


def test_vector_sides_complete_with_each_other() -> None:
    ivec, rvec = load("initiator.json")[0], load("responder.json")[0]
    ini = Initiator(Keypair(h(ivec["ls_priv"])), h(ivec["rs_pub"]), ephemeral=Keypair(h(ivec["e_priv"])))
    res = Responder(Keypair(h(rvec["ls_priv"])), ephemeral=Keypair(h(rvec["e_priv"])))
    act3 = ini.read_act_two(res.read_act_one(ini.act_one()))
    session = res.read_act_three(act3)
    assert session.remote_static == Keypair(h(ivec["ls_priv"])).public
    assert ini.session.handshake_hash == session.handshake_hash
    assert session.decrypt(ini.session.encrypt(b"ping")) == b"ping"
    assert ini.session.decrypt(session.encrypt(b"pong")) == b"pong"


def _message_session(vec: dict[str, Any], *, sending: bool) -> NoiseSession:
    sk, rk = h(vec["sk"]), h(vec["rk"])
    return NoiseSession(send_key=sk if sending else rk, recv_key=rk if sending else sk,
                        chaining_key=h(vec["ck"]), local_static=b"", remote_static=b"",
                        handshake_hash=b"", initiator=sending)


@pytest.mark.parametrize("vec", load("messages.json"), ids=lambda v: v["name"])
def test_message_vectors_across_rotation(vec: dict[str, Any]) -> None:
    sender = _message_session(vec, sending=True)
    receiver = _message_session(vec, sending=False)
    plaintext = h(vec["plaintext"])
    outputs = {int(i): h(v) for i, v in vec["outputs"].items()}
    assert sorted(outputs) == [0, 1, 500, 501, 1000, 1001]
    rotations = {c["salt"]: c for c in load("hkdf.json")}
    for n in range(max(outputs) + 1):
        frame = sender.encrypt(plaintext)
        if n in outputs:
            assert frame == outputs[n], f"message {n}"
        # The receiver rotates in step: two steps (length, body) like the spec says.
        assert receiver.decrypt_length(frame[:HEADER_SIZE]) == len(plaintext)
        assert receiver.decrypt_body(frame[HEADER_SIZE:]) == plaintext
        if n + 1 in (500, 1000):
            # 1000 nonces used: ck', k' = HKDF(ck, k) for the next message.
            assert sender.send_cipher.nonce == 0
            assert receiver.recv_cipher.nonce == 0
            assert sender.send_cipher.key == receiver.recv_cipher.key
    first = rotations[vec["ck"]]
    second = rotations[first["out1"]]
    assert sender.send_cipher.chaining_key == h(second["out1"])
    assert sender.send_cipher.key == h(second["out2"])
    # The other direction never rotated: it sent nothing.
    assert sender.recv_cipher.key == h(vec["rk"]) and sender.recv_cipher.nonce == 0


def test_message_vectors_through_the_chunk_decoder() -> None:
    vec = load("messages.json")[0]
    sender = _message_session(vec, sending=True)
    decoder = FrameDecoder(_message_session(vec, sending=False))
    stream = b"".join(sender.encrypt(b"hello") for _ in range(1002))
    rng = random.Random(8)
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice((1, 2, 17, 18, 19, 39, 40, 41, 500))
        got += decoder.feed(stream[pos:pos + step])
        pos += step
    assert got == [b"hello"] * 1002
    assert decoder.buffered == 0


def test_cipher_state_rotates_at_1000_nonces() -> None:
    ck, k = b"\x01" * 32, b"\x02" * 32
    c = CipherState(k, ck)
    for _ in range(999):
        c.encrypt(b"")
    assert (c.key, c.nonce) == (k, 999)
    c.encrypt(b"")
    assert (c.chaining_key, c.key) == hkdf_two_keys(ck, k)
    assert c.nonce == 0


# --- handshake misuse and keys ----------------------------------------------------------------------
def test_handshake_order_is_enforced() -> None:
    alice, bob = Keypair.generate(), Keypair.generate()
    ini = Initiator(alice, bob.public)
    with pytest.raises(RuntimeError):
        ini.read_act_two(bytes(ACT_TWO_SIZE))
    ini.act_one()
    with pytest.raises(RuntimeError):
        ini.act_one()
    res = Responder(bob)
    with pytest.raises(RuntimeError):
        res.read_act_three(bytes(ACT_THREE_SIZE))
    with pytest.raises(RuntimeError):
        res.session  # noqa: B018


def test_wrong_responder_key_fails_act_one_tag() -> None:
    alice, bob, mallory = Keypair.generate(), Keypair.generate(), Keypair.generate()
    act1 = Initiator(alice, mallory.public).act_one()
    with pytest.raises(BadTagError) as info:
        Responder(bob).read_act_one(act1)
    assert info.value.code == "ACT1_BAD_TAG"


def test_replayed_act_one_gets_fresh_act_two_and_old_act_three_fails() -> None:
    alice, bob = Keypair.generate(), Keypair.generate()
    ini = Initiator(alice, bob.public)
    act1 = ini.act_one()
    act3 = ini.read_act_two(Responder(bob).read_act_one(act1))
    replay = Responder(bob)
    replay.read_act_one(act1)  # act one alone proves nothing: anyone can replay it
    with pytest.raises(BadTagError) as info:
        replay.read_act_three(act3)  # but the old act three is bound to the old ephemeral
    assert info.value.code == "ACT3_BAD_CIPHERTEXT"


def test_keypair() -> None:
    with pytest.raises(ValueError):
        Keypair(bytes(32))
    with pytest.raises(ValueError):
        Keypair(bytes(31) + b"\x01" + b"\x00")
    with pytest.raises(ValueError):
        Keypair(h("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"))  # n
    k = Keypair(b"\x11" * 32)
    assert "11" * 8 not in repr(k) and k.public.hex() in repr(k)
    assert k.secret == b"\x11" * 32
    assert Keypair.of(k) is k
    node_key = NodeKey(secret=b"\x11" * 32, public=k.public)
    assert Keypair.of(node_key).public == k.public
    assert Keypair.generate().public != Keypair.generate().public


def test_validate_public_key() -> None:
    pub = Keypair.generate().public
    assert validate_public_key(pub) == pub
    for bad in (pub[:-1], pub + b"\x00", b"\x04" + pub[1:], b"\x02" + b"\xff" * 32, b""):
        with pytest.raises(ValueError):
            validate_public_key(bad)
    with pytest.raises(ValueError):
        Initiator(Keypair.generate(), b"\x02" + b"\xff" * 32)


# --- transport phase --------------------------------------------------------------------------------
def test_round_trip_edge_sizes() -> None:
    a, b = pair()
    for size in (0, 1, 15, 16, 17, 65534, MAX_MESSAGE_SIZE):
        msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
        frame = a.encrypt(msg)
        assert len(frame) == size + HEADER_SIZE + MAC_SIZE
        assert b.decrypt(frame) == msg
    with pytest.raises(MessageTooLargeError) as info:
        a.encrypt(bytes(MAX_MESSAGE_SIZE + 1))
    assert not isinstance(info.value, NoiseError)  # our mistake, not the peer's
    assert b.decrypt(a.encrypt(b"still fine")) == b"still fine"


def test_tampered_header_fails_and_session_stays_failed() -> None:
    a, b = pair()
    frame = bytearray(a.encrypt(b"hello"))
    frame[0] ^= 1
    with pytest.raises(DecryptionError):
        b.decrypt_length(bytes(frame[:HEADER_SIZE]))
    assert b.failed
    with pytest.raises(SessionFailedError):
        b.decrypt(a.encrypt(b"next"))


def test_tampered_body_reordered_and_replayed_frames_fail() -> None:
    a, b = pair()
    frame = bytearray(a.encrypt(b"hello"))
    frame[-1] ^= 0x80
    b.decrypt_length(bytes(frame[:HEADER_SIZE]))
    with pytest.raises(DecryptionError):
        b.decrypt_body(bytes(frame[HEADER_SIZE:]))

    a, b = pair()
    first, second = a.encrypt(b"one"), a.encrypt(b"two")
    with pytest.raises(DecryptionError):
        b.decrypt(second)

    a, b = pair()
    first = a.encrypt(b"one")
    assert b.decrypt(first) == b"one"
    with pytest.raises(DecryptionError):
        b.decrypt(first)


def test_reflected_frame_fails() -> None:
    a, b = pair()
    with pytest.raises(DecryptionError):  # each direction has its own key
        a.decrypt(a.encrypt(b"mirror"))


def test_body_of_wrong_size_is_a_frame_error() -> None:
    a, b = pair()
    frame = a.encrypt(b"hello")
    b.decrypt_length(frame[:HEADER_SIZE])
    with pytest.raises(FrameLengthError):
        b.decrypt_body(frame[HEADER_SIZE:-1])
    a, b = pair()
    with pytest.raises(FrameLengthError):
        b.decrypt_length(a.encrypt(b"x")[:HEADER_SIZE - 1])


def test_length_over_the_receivers_limit() -> None:
    a, b = pair(max_message_size=100)
    assert b.decrypt(a.encrypt(bytes(100))) == bytes(100)
    with pytest.raises(FrameTooLargeError) as info:
        b.decrypt_length(a.encrypt(bytes(101))[:HEADER_SIZE])
    assert (info.value.length, info.value.limit) == (101, 100)
    with pytest.raises(ValueError):
        Responder(Keypair.generate(), max_message_size=MAX_MESSAGE_SIZE + 1)


def test_decoder_call_order_is_enforced() -> None:
    a, b = pair()
    with pytest.raises(RuntimeError):
        b.decrypt_body(bytes(MAC_SIZE))
    b.decrypt_length(a.encrypt(b"")[:HEADER_SIZE])
    with pytest.raises(RuntimeError):
        b.decrypt_length(bytes(HEADER_SIZE))


# --- fuzzing ----------------------------------------------------------------------------------------
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESPONDER_KEY = Keypair(b"\x21" * 32)
INITIATOR_KEY = Keypair(b"\x11" * 32)


def _act(size: int) -> st.SearchStrategy[bytes]:
    """Random acts: any length, and well-formed-looking ones (version 0, a real point prefix)."""
    point = Keypair.generate().public
    return st.one_of(
        st.binary(max_size=2 * size),
        st.binary(min_size=size, max_size=size),
        st.binary(min_size=size - 34, max_size=size - 34).map(lambda rest: b"\x00" + point + rest),
    )


@FUZZ
@given(_act(ACT_ONE_SIZE))
def test_fuzz_act_one(data: bytes) -> None:
    res = Responder(RESPONDER_KEY)
    with pytest.raises(HandshakeError):
        res.read_act_one(data)


@FUZZ
@given(_act(ACT_TWO_SIZE))
def test_fuzz_act_two(data: bytes) -> None:
    ini = Initiator(INITIATOR_KEY, RESPONDER_KEY.public)
    ini.act_one()
    with pytest.raises(HandshakeError):
        ini.read_act_two(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2 * ACT_THREE_SIZE),
                 st.binary(min_size=ACT_THREE_SIZE - 1, max_size=ACT_THREE_SIZE - 1).map(b"\x00".__add__)))
def test_fuzz_act_three(data: bytes) -> None:
    ini = Initiator(INITIATOR_KEY, RESPONDER_KEY.public)
    res = Responder(RESPONDER_KEY)
    res.read_act_one(ini.act_one())
    with pytest.raises(HandshakeError):
        res.read_act_three(data)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_frames(chunks: list[bytes]) -> None:
    _, b = pair()
    decoder = FrameDecoder(b)
    try:
        for chunk in chunks:
            assert decoder.feed(chunk) == []  # forging a frame is not a thing fuzzing finds
    except FrameError:
        assert b.failed
        with pytest.raises(SessionFailedError):
            decoder.feed(b"")


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.data())
def test_fuzz_bit_flips_are_caught(message: bytes, data: st.DataObject) -> None:
    a, b = pair()
    frame = bytearray(a.encrypt(message))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        b.decrypt(bytes(frame))


def _sizes(rng: random.Random, count: int) -> list[int]:
    # Mostly small, some around the 16-byte block edges, a few large up to the maximum.
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.7:
            out.append(rng.randrange(0, 200))
        elif kind < 0.95:
            out.append(rng.randrange(0, 5000))
        else:
            out.append(rng.randrange(0, MAX_MESSAGE_SIZE + 1))
    return out


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_round_trips_both_directions_across_rotations(seed: int) -> None:
    rng = random.Random(seed)
    a, b = pair()
    count = 2100  # > 2000: four key rotations per direction
    decoders = {id(a): FrameDecoder(a), id(b): FrameDecoder(b)}
    schedule = [rng.random() < 0.5 for _ in range(2 * count)]
    sent = {True: 0, False: 0}
    for a_sends, size in zip(schedule, _sizes(rng, len(schedule)), strict=True):
        if sent[a_sends] == count:
            a_sends = not a_sends
        src, dst = (a, b) if a_sends else (b, a)
        message = rng.randbytes(size)
        frame = src.encrypt(message)
        cut = rng.randrange(len(frame) + 1)
        decoder = decoders[id(dst)]
        # Arbitrary chunk boundaries: nothing completes before the last byte arrives.
        first = decoder.feed(frame[:cut])
        if cut < len(frame):
            assert first == []
        assert first + decoder.feed(frame[cut:]) == [message]
        sent[a_sends] += 1
    assert sent == {True: count, False: count}
    assert a.send_cipher.key == b.recv_cipher.key and a.recv_cipher.key == b.send_cipher.key
    assert a.send_cipher.key != a.recv_cipher.key
