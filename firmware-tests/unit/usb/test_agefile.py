"""The age v1 scrypt decryptor: the C2SP testkit, files made by pyrage and by Debian's
`age`, and every kind of damage a stick can do to a backup."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pyrage
import pytest
from image.agecli import _run_with_tty, encrypt_light  # the real `age` CLI, given a terminal

from appliance.usb import agefile
from appliance.usb.agefile import (
    CHUNK,
    HeaderError,
    HeaderMacError,
    NoPassphraseStanza,
    NotAgeFile,
    PayloadError,
    WorkFactorTooHigh,
    WrongPassphrase,
)

TESTKIT = Path(__file__).resolve().parents[2] / "vectors" / "age" / "testkit"
PHRASE = "abandon ability able about above absent absorb abstract absurd abuse access accident"
SIZES = [0, 1, CHUNK, CHUNK + 1, 3 * 2**20 + 5]


# --- the C2SP testkit ------------------------------------------------------------------------

def _vector(path: Path) -> tuple[dict[str, list[str]], bytes]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        meta.setdefault(key, []).append(value)
    if meta.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return meta, body


def _expect_error(expect: str) -> tuple[type[Exception], ...]:
    return {"header failure": (HeaderError, NotAgeFile),
            "no match": (WrongPassphrase, NoPassphraseStanza),
            "HMAC failure": (HeaderMacError,),
            "payload failure": (PayloadError,)}[expect]


@pytest.mark.parametrize("path", sorted(TESTKIT.iterdir()), ids=lambda p: p.name)
def test_c2sp_testkit(path: Path) -> None:
    meta, data = _vector(path)
    expect = meta["expect"][0]
    phrases = meta.get("passphrase", [])
    if phrases and "identity" not in meta:
        # A passphrase file: the whole decryption, as a restore runs it.
        if expect == "success":
            plain = agefile.decrypt(data, phrases[0])
            assert hashlib.sha256(plain).hexdigest() == meta["payload"][0]
        else:
            with pytest.raises(_expect_error(expect)):
                agefile.decrypt(data, phrases[0])
        if path.name == "scrypt_work_factor_23":  # named as such, with the number
            with pytest.raises(WorkFactorTooHigh, match=r"2\^23 too high \(limit 2\^22\)"):
                agefile.decrypt(data, phrases[0])
        return
    # Another recipient type (or mixed): the header parser, then MAC and STREAM with the
    # vector's file key; our decrypt() says "not a passphrase file", never crashes.
    if expect == "header failure":
        with pytest.raises((HeaderError, NotAgeFile)):
            header = agefile.parse_header(data)
            if phrases:  # scrypt mixed with another stanza: refused when looking for it
                agefile.unwrap_file_key(header, phrases[0])
        return
    header = agefile.parse_header(data)
    with pytest.raises(NoPassphraseStanza):
        agefile.decrypt(data, PHRASE)
    file_key = bytes.fromhex(meta["file key"][0])
    if expect == "success":
        plain = agefile.open_payload(data, header, file_key)
        assert hashlib.sha256(plain).hexdigest() == meta["payload"][0]
    elif expect != "no match":  # "no match" is about the X25519 identity itself
        with pytest.raises(_expect_error(expect)):
            agefile.open_payload(data, header, file_key)


def test_testkit_covers_every_expectation() -> None:
    # The parametrized test above only proves something if the copy holds each case.
    seen = {_vector(p)[0]["expect"][0] for p in TESTKIT.iterdir()}
    assert seen == {"success", "header failure", "no match", "HMAC failure", "payload failure"}
    assert len(list(TESTKIT.glob("scrypt*"))) >= 20 and len(list(TESTKIT.glob("stream_*"))) >= 20


# --- files from pyrage (the box's encryptor) and from Debian's age ---------------------------

def _age_cli(plain: bytes, tmp_path: Path) -> bytes:
    src, out = tmp_path / "plain", tmp_path / "plain.age"
    src.write_bytes(plain)
    _run_with_tty(["age", "--passphrase", "-o", str(out), str(src)], PHRASE)
    return out.read_bytes()


@pytest.mark.parametrize("log_n", [1, 12, 16])
def test_chosen_work_factors_agree_with_rage(log_n: int, tmp_path: Path) -> None:
    # pyrage and `age` pick their own work factor; the image tests' writer takes one
    # (checked there against `age`). rage reads these low ones, so it is the referee.
    plain = os.urandom(CHUNK + 7)
    encrypt_light(plain, tmp_path / "f.age", PHRASE, log_n=log_n)
    data = (tmp_path / "f.age").read_bytes()
    assert agefile.work_factor(data) == log_n
    assert agefile.decrypt(data, PHRASE) == plain == bytes(pyrage.passphrase.decrypt(data, PHRASE))


@pytest.mark.slow
def test_pyrage_and_age_cli_files_decrypt(tmp_path: Path) -> None:
    plain = os.urandom(1000)
    for data in (bytes(pyrage.passphrase.encrypt(plain, PHRASE)), _age_cli(plain, tmp_path)):
        assert agefile.decrypt(data, PHRASE) == plain
        log_n = agefile.work_factor(data)
        assert log_n is not None and 10 <= log_n <= agefile.MAX_WORK_FACTOR
        with pytest.raises(WrongPassphrase):
            agefile.decrypt(data, PHRASE.replace("abandon", "ability"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_every_chunk_boundary_from_both_encryptors(size: int, tmp_path: Path) -> None:
    # 0 B (one empty final chunk), 1 B, exactly one full final chunk, a full chunk plus a
    # 1-byte final one, and a few MiB (48 chunks); pyrage calibrates its work factor
    # (18-20 here), `age` writes 18.
    plain = os.urandom(size)
    for data in (bytes(pyrage.passphrase.encrypt(plain, PHRASE)), _age_cli(plain, tmp_path)):
        assert agefile.decrypt(data, PHRASE) == plain
        chunks = max(1, -(-size // CHUNK))
        header = agefile.parse_header(data)
        assert len(data) - header.payload_offset == 16 + size + 16 * chunks


# --- damage, truncation, limits --------------------------------------------------------------

Sample = tuple[bytes, bytes, bytes]


@pytest.fixture(scope="module")
def sample() -> Sample:
    """(file, plaintext, file key): two chunks and a bit, from pyrage; scrypt runs once
    here, so the damage tests below reach the MAC and STREAM checks without it."""
    plain = os.urandom(2 * CHUNK + 100)
    data = bytes(pyrage.passphrase.encrypt(plain, PHRASE))
    return data, plain, agefile.unwrap_file_key(agefile.parse_header(data), PHRASE)


def test_every_truncation_is_refused_with_a_typed_error(sample: Sample) -> None:
    data, _, key = sample
    header = agefile.parse_header(data)
    cuts = list(range(0, header.payload_offset + 40)) + [
        len(data) - 1, len(data) - 16, len(data) - 116, len(data) - 117,
        header.payload_offset + 16 + CHUNK + 16, header.payload_offset + 16 + 2 * (CHUNK + 16)]
    for cut in cuts:
        short = data[:cut]
        try:
            short_header = agefile.parse_header(short)
        except (HeaderError, NotAgeFile):
            assert cut < header.payload_offset + 16
            continue
        with pytest.raises(PayloadError) as err:
            agefile.open_payload(short, short_header, key)
        if cut in (header.payload_offset + 16 + CHUNK + 16,
                   header.payload_offset + 16 + 2 * (CHUNK + 16)):
            assert "no final chunk" in str(err.value)  # cut exactly at a chunk boundary


def test_flipped_bytes_in_header_mac_and_payload(sample: Sample) -> None:
    data, plain, key = sample
    header = agefile.parse_header(data)
    mac_at = data.index(b"\n---") + 1 + len(b"--- ")
    salt_at = data.index(b"-> scrypt ") + len(b"-> scrypt ")
    body_at = data.index(b"\n", salt_at) + 1
    for at, expected in ((0, NotAgeFile),  # "age-encryption.org/" itself
                         (len(b"age-encryption.org/v"), HeaderError),  # the version
                         (salt_at + 3, WrongPassphrase),  # the salt: another wrap key
                         (body_at + 5, WrongPassphrase)):  # the wrapped file key
        with pytest.raises(expected):
            agefile.decrypt(_flip(data, at), PHRASE)
    # After the file key (skipping scrypt: same key): the MAC, then each payload part.
    for at, expected in ((mac_at + 6, HeaderMacError),  # the MAC itself
                         (header.payload_offset + 2, PayloadError),  # the nonce: another key
                         (header.payload_offset + 16 + 10, PayloadError),  # chunk 0
                         (header.payload_offset + 16 + CHUNK + 16 + 3, PayloadError),  # chunk 1
                         (len(data) - 1, PayloadError)):  # the final chunk's tag
        damaged = _flip(data, at)
        with pytest.raises(expected):
            agefile.open_payload(damaged, agefile.parse_header(damaged), key)
    assert agefile.open_payload(data, header, key) == plain


def _flip(data: bytes, at: int) -> bytes:
    """``data`` with one byte changed; in the header's base64, to another base64 letter."""
    damaged = bytearray(data)
    letter = _BASE64.find(data[at])
    # A base64 letter becomes the next one (XOR could make '8' a '<': a parse error, not
    # the MAC or key failure the test asks for); other bytes are flipped.
    damaged[at] = _BASE64[(letter + 1) % 64] if letter >= 0 else data[at] ^ 0x04
    return bytes(damaged)


_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_extra_stanzas_are_refused_and_the_mac_covers_them(sample: Sample) -> None:
    data, _, key = sample
    tampered = data.replace(b"-> scrypt ", b"-> scrypt  ", 1)
    with pytest.raises(HeaderError, match="bad stanza argument"):
        agefile.parse_header(tampered)
    extra = data.replace(b"\n---", b"\n-> grease x\n\n---", 1)
    with pytest.raises(HeaderError, match="scrypt stanza not alone"):
        agefile.decrypt(extra, PHRASE)
    mixed = agefile.parse_header(extra)
    assert [s.args[0] for s in mixed.stanzas] == ["scrypt", "grease"]
    with pytest.raises(HeaderMacError):  # had a caller skipped the rule, the MAC catches it
        agefile.open_payload(extra, mixed, key)


def test_trailing_and_extra_data(sample: Sample) -> None:
    data, _, key = sample
    for tail in (b"\x00", os.urandom(15), os.urandom(16), os.urandom(CHUNK + 16)):
        longer = data + tail
        with pytest.raises(PayloadError):
            agefile.open_payload(longer, agefile.parse_header(longer), key)


def test_work_factor_cap_is_checked_before_scrypt_runs(sample: Sample) -> None:
    data, plain, _ = sample
    log_n = agefile.work_factor(data)
    assert log_n is not None
    with pytest.raises(WorkFactorTooHigh) as err:
        agefile.decrypt(data, PHRASE, max_work_factor=log_n - 1)
    assert (err.value.log_n, err.value.maximum) == (log_n, log_n - 1)
    assert f"2^{log_n}" in str(err.value)
    assert agefile.decrypt(data, PHRASE, max_work_factor=log_n) == plain
    # A header claiming 2^40 (a hostile stick) is refused at once, not computed.
    salt = data.split(b"-> scrypt ", 1)[1].split(b" ", 1)[0]
    huge = data.replace(b"-> scrypt " + salt + b" " + str(log_n).encode(),
                        b"-> scrypt " + salt + b" 40", 1)
    with pytest.raises(WorkFactorTooHigh, match=r"2\^40"):
        agefile.decrypt(huge, PHRASE)
    assert agefile.scrypt_memory(22) == 4 * 2**30
    # With the cap lifted, memory scrypt cannot have is a typed error, not a crash.
    vast = huge.replace(b" 40\n", b" 34\n", 1)
    with pytest.raises(agefile.ScryptMemoryError, match="16777216 MiB"):
        agefile.decrypt(vast, PHRASE, max_work_factor=34)


def test_not_a_passphrase_file_and_garbage() -> None:
    for junk in (b"", b"hello", b"age-encryption.org/v1", b"age-encryption.org/v1\n",
                 b"age-encryption.org/v1\n---\n", b"age-encryption.org/v1\n-> scrypt\n",
                 b"age-encryption.org/v1\n-> \n\n--- " + b"A" * 43 + b"\n" + bytes(16),
                 bytes(range(256)) * 10):
        with pytest.raises(agefile.AgeError):
            agefile.decrypt(junk, PHRASE)
    data = b"age-encryption.org/v1\n-> X25519 abc\n\n--- " + b"A" * 43 + b"\n" + bytes(32)
    with pytest.raises(NoPassphraseStanza, match="X25519"):
        agefile.decrypt(data, PHRASE)
    assert agefile.work_factor(data) is None and agefile.work_factor(b"junk") is None
