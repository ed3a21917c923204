"""age v1 decryption for one passphrase (scrypt) recipient, with a fixed work-factor cap.

Why not pyrage/rage here: rage refuses any scrypt work factor above its own speed
estimate + 4, measured at decrypt time, and pyrage exposes no maximum. On a slow or busy
box that estimate drops, so a backup written at a normal work factor was refused and
reported as a wrong phrase (seen twice: a restore at load ~20, and the guest under QEMU
TCG). This decryptor accepts every work factor up to :data:`MAX_WORK_FACTOR`, however
slow the machine is today, and names the limit when a file exceeds it. Encryption stays
on pyrage.

Format: https://age-encryption.org/v1 (C2SP ``age.md``): a text header (version line,
stanzas with base64 bodies wrapped at 64 columns, ``---`` and an HMAC-SHA-256), then a
16-byte nonce and a STREAM of ChaCha20-Poly1305 chunks of 64 KiB. Pure code, no I/O.
Every malformed input raises an :class:`AgeError` subclass; the messages never hold the
passphrase or a key::

    AgeError
    +-- NotAgeFile          not an age v1 file at all
    +-- HeaderError         the header breaks the format (or the file ends in it)
    |   +-- WorkFactorTooHigh   scrypt log2 N above the cap (the number is named)
    +-- NoPassphraseStanza  a valid age file, but not encrypted to a passphrase
    +-- WrongPassphrase     the scrypt stanza's body does not decrypt with this passphrase
    +-- ScryptMemoryError   this machine cannot allocate scrypt's memory
    +-- HeaderMacError      the header was changed after it was written
    +-- PayloadError        the encrypted body is damaged, truncated or has trailing bytes
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "MAX_WORK_FACTOR",
    "AgeError",
    "Header",
    "HeaderError",
    "HeaderMacError",
    "NoPassphraseStanza",
    "NotAgeFile",
    "PayloadError",
    "ScryptMemoryError",
    "Stanza",
    "WorkFactorTooHigh",
    "WrongPassphrase",
    "decrypt",
    "open_payload",
    "parse_header",
    "scrypt_memory",
    "unwrap_file_key",
    "work_factor",
]

#: The highest scrypt log2(N) we run: age's own default limit (Go age's ScryptIdentity,
#: and the C2SP testkit's ``scrypt_work_factor_23`` is a header failure), so every file
#: the ``age`` CLI reads, we read. 2^22 costs 4 GiB (128 * r * N, r = 8); Hearth writes
#: what rage calibrates to ~1 s (log2 N ~16-20), ``age`` writes 18.
MAX_WORK_FACTOR = 22
MAGIC = b"age-encryption.org/"
VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
_TAG = 16
_NONCE = 16
_FILE_KEY = 16
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_SCRYPT_R = 8
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_DECIMAL = re.compile(rb"[1-9][0-9]*")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")  # 1*VCHAR
_LINE = 64


class AgeError(ValueError):
    """The file cannot be decrypted; the message is safe to show (no secret in it)."""


class NotAgeFile(AgeError):
    pass


class HeaderError(AgeError):
    pass


class WorkFactorTooHigh(HeaderError):
    def __init__(self, log_n: int, maximum: int) -> None:
        super().__init__(f"scrypt work factor 2^{log_n} too high (limit 2^{maximum})")
        self.log_n = log_n
        self.maximum = maximum


class NoPassphraseStanza(AgeError):
    pass


class WrongPassphrase(AgeError):
    pass


class ScryptMemoryError(AgeError):
    pass


class HeaderMacError(AgeError):
    pass


class PayloadError(AgeError):
    pass


@dataclass(frozen=True)
class Stanza:
    args: tuple[str, ...]  # the type first ("scrypt"), then its arguments
    body: bytes


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    #: The bytes the MAC covers: the header up to and including ``---``.
    mac_input: bytes
    #: Where the payload (its 16-byte nonce) starts in the file.
    payload_offset: int


def _b64(text: bytes, what: str) -> bytes:
    """Canonical unpadded base64 (RFC 4648 without ``=``), or a HeaderError."""
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise HeaderError(f"{what} not valid base64")
    raw = base64.b64decode(text + b"=" * (-len(text) % 4))
    if base64.b64encode(raw).rstrip(b"=") != text:  # stray bits in the last character
        raise HeaderError(f"{what} not canonical base64")
    return raw


def parse_header(data: bytes) -> Header:
    """The header of an age v1 file, strictly (the ABNF of the spec, LF line ends)."""
    if not data.startswith(MAGIC):
        raise NotAgeFile("not an age file")
    pos = 0

    def line() -> tuple[int, bytes]:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            raise HeaderError("truncated in the header")
        start, pos = pos, end + 1
        return start, data[start:end]

    _, version = line()
    if version != VERSION_LINE:
        raise HeaderError(f"unsupported age version {version[len(MAGIC):][:20]!r}")
    stanzas: list[Stanza] = []
    while True:
        start, text = line()
        if text.startswith(b"--- "):
            if not stanzas:
                raise HeaderError("no recipient stanza")
            mac = _b64(text[4:], "header MAC")
            if len(mac) != 32:
                raise HeaderError("header MAC has the wrong length")
            if len(data) - pos < _NONCE:
                raise HeaderError("truncated before the payload")
            return Header(tuple(stanzas), mac, data[:start + 3], pos)
        if not text.startswith(b"-> "):
            raise HeaderError(f"bad header line {text[:12]!r}")
        args = text[3:].split(b" ")
        if not all(_ARGUMENT.fullmatch(a) for a in args):
            raise HeaderError("bad stanza argument")
        body = bytearray()
        while True:
            _, chunk = line()
            if len(chunk) > _LINE:
                raise HeaderError("stanza line over 64 columns")
            body += chunk
            if len(chunk) < _LINE:
                break
        stanzas.append(Stanza(tuple(a.decode("ascii") for a in args),
                              _b64(bytes(body), "stanza body")))


def _scrypt_stanza(header: Header) -> tuple[bytes, int, bytes]:
    """(salt, log2 N, body) of the header's one scrypt stanza, validated per the spec."""
    found = [s for s in header.stanzas if s.args[0] == "scrypt"]
    if not found:
        types = sorted({s.args[0][:20] for s in header.stanzas})[:3]
        raise NoPassphraseStanza(f"not encrypted to a passphrase (recipients: {', '.join(types)})")
    if len(header.stanzas) != 1:
        raise HeaderError("scrypt stanza not alone")
    stanza = found[0]
    if len(stanza.args) != 3:
        raise HeaderError("scrypt stanza needs two arguments")
    salt = _b64(stanza.args[1].encode(), "scrypt salt")
    if len(salt) != 16:
        raise HeaderError("scrypt salt is not 16 bytes")
    digits = stanza.args[2].encode()
    if not _DECIMAL.fullmatch(digits):
        raise HeaderError("bad scrypt work factor")
    if len(digits) > 2:  # two digits cover any N scrypt can take (and int() of a huge string is slow)
        raise HeaderError("scrypt work factor out of range")
    if len(stanza.body) != _FILE_KEY + _TAG:  # checked before any decryption (spec)
        raise HeaderError("scrypt stanza body is not 32 bytes")
    return salt, int(digits), stanza.body


def work_factor(data: bytes) -> int | None:
    """log2(N) of a valid scrypt file's stanza (the cost of opening it), else None."""
    try:
        return _scrypt_stanza(parse_header(data))[1]
    except AgeError:
        return None


def scrypt_memory(log_n: int) -> int:
    """Bytes scrypt needs at this work factor (128 * r * N)."""
    return 128 * _SCRYPT_R * (1 << log_n)


def unwrap_file_key(header: Header, passphrase: str, *,
                    max_work_factor: int = MAX_WORK_FACTOR) -> bytes:
    """The 16-byte file key from the scrypt stanza; WrongPassphrase if its body fails."""
    salt, log_n, body = _scrypt_stanza(header)
    limit = min(max_work_factor, 63)  # N is a 64-bit integer in scrypt
    if log_n > limit:
        raise WorkFactorTooHigh(log_n, limit)
    try:
        wrap_key = Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << log_n, r=_SCRYPT_R,
                          p=1).derive(passphrase.encode("utf-8"))
    except MemoryError:
        raise ScryptMemoryError(f"scrypt 2^{log_n} needs "
                                f"{scrypt_memory(log_n) >> 20} MiB: not enough memory") from None
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase") from None


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt, info).derive(ikm)


def open_payload(data: bytes, header: Header, file_key: bytes) -> bytes:
    """Check the header MAC with ``file_key``, then decrypt the whole STREAM payload."""
    expected = hmac.new(_hkdf(file_key, b"", b"header"), header.mac_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, header.mac):
        raise HeaderMacError("header MAC mismatch")
    nonce = data[header.payload_offset:header.payload_offset + _NONCE]
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    body = memoryview(data)[header.payload_offset + _NONCE:]
    out: list[bytes] = []
    off = counter = 0
    while True:
        size = min(len(body) - off, CHUNK + _TAG)
        if size < _TAG:  # no bytes at all, or fewer than a tag: never a chunk
            raise PayloadError(f"truncated in chunk {counter}")
        last = off + size == len(body)
        chunk = body[off:off + size]
        try:
            plain = aead.decrypt(_chunk_nonce(counter, last), chunk, None)
        except InvalidTag:
            raise PayloadError(_chunk_failure(aead, counter, chunk, last)) from None
        if last and not plain and counter:
            raise PayloadError("empty final chunk after data")
        out.append(plain)
        if last:
            return b"".join(out)
        off += size
        counter += 1


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunk_failure(aead: ChaCha20Poly1305, counter: int, chunk: memoryview, last: bool) -> str:
    """Why a chunk failed: a truncated file reads differently from a damaged one."""
    if last and len(chunk) == CHUNK + _TAG:
        try:
            aead.decrypt(_chunk_nonce(counter, False), chunk, None)
            return "truncated (no final chunk)"
        except InvalidTag:
            pass
    if not last:
        try:
            aead.decrypt(_chunk_nonce(counter, True), chunk, None)
            return f"trailing data after final chunk {counter}"
        except InvalidTag:
            pass
    return f"chunk {counter} corrupt or truncated" if last else f"chunk {counter} corrupt"


def decrypt(data: bytes, passphrase: str, *, max_work_factor: int = MAX_WORK_FACTOR) -> bytes:
    """The plaintext of an age v1 file encrypted to ``passphrase``, all or nothing."""
    header = parse_header(data)
    file_key = unwrap_file_key(header, passphrase, max_work_factor=max_work_factor)
    return open_payload(data, header, file_key)
