"""BOLT #8 transport, ``Noise_XK_secp256k1_ChaChaPoly_SHA256``, as sans-I/O state machines.

Nothing here reads or writes a socket: the handshake objects turn received act bytes into
the bytes to send, and :class:`NoiseSession` turns messages into frames and frames back
into messages. ``appliance.transport.stream`` drives them over asyncio streams; the unit
tests drive them with the BOLT #8 Appendix A vectors.

Three acts (``-> e, es``, ``<- e, ee``, ``-> s, se``) of exactly 50, 50 and 66 bytes,
each starting with the version byte 0, leave both sides with one key per direction. A
message then travels as ``enc(len u16 BE)`` (18 bytes) followed by ``enc(message)``
(``len + 16`` bytes); each key rotates (``ck', k' = HKDF(ck, k)``) after 1000 uses, that
is after 500 messages.

Every failure caused by the peer's bytes raises a :class:`NoiseError` (a ``ValueError``):
:class:`HandshakeError` during the acts, with ``code`` naming the case as the spec's
vectors do (``ACT1_BAD_VERSION``, ``ACT3_BAD_TAG``...), and :class:`FrameError` after it.
A session that has failed once refuses to go on: its nonces no longer match the peer's.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Protocol

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ACT_ONE_SIZE",
    "ACT_THREE_SIZE",
    "ACT_TWO_SIZE",
    "HANDSHAKE_VERSION",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_MESSAGE_SIZE",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "ROTATION_INTERVAL",
    "ActLengthError",
    "BadPublicKeyError",
    "BadTagError",
    "BadVersionError",
    "CipherState",
    "DecryptionError",
    "FrameDecoder",
    "FrameError",
    "FrameLengthError",
    "FrameTooLargeError",
    "HandshakeError",
    "Initiator",
    "Keypair",
    "MessageTooLargeError",
    "NoiseError",
    "NoiseSession",
    "Responder",
    "SecretKey",
    "SessionFailedError",
    "decrypt_with_ad",
    "encrypt_with_ad",
    "hkdf_two_keys",
    "validate_public_key",
]

PROTOCOL_NAME = b"Noise_XK_secp256k1_ChaChaPoly_SHA256"
PROLOGUE = b"lightning"
HANDSHAKE_VERSION = 0
MAC_SIZE = 16
PUBKEY_SIZE = 33
ACT_ONE_SIZE = 1 + PUBKEY_SIZE + MAC_SIZE  # 50
ACT_TWO_SIZE = 1 + PUBKEY_SIZE + MAC_SIZE  # 50
ACT_THREE_SIZE = 1 + PUBKEY_SIZE + MAC_SIZE + MAC_SIZE  # 66
HEADER_SIZE = 2 + MAC_SIZE  # 18
MAX_MESSAGE_SIZE = 65535  # the u16 length prefix; BOLT 8 makes it the hard limit
#: Nonce value at which a key rotates; every message uses two nonces (length, body).
ROTATION_INTERVAL = 1000


# --- errors -----------------------------------------------------------------------------------------
class NoiseError(ValueError):
    """The peer's bytes broke the protocol; the connection must be dropped."""


class HandshakeError(NoiseError):
    """A handshake act was refused. ``code`` reads like the BOLT 8 vectors' ``ERROR (...)``."""

    reason = "FAILED"

    def __init__(self, act: int, detail: str) -> None:
        self.act = act
        self.code = f"ACT{act}_{self.reason}"
        super().__init__(f"act {act}: {detail}")


class ActLengthError(HandshakeError):
    """An act of the wrong size: a short read (truncated) or trailing bytes."""

    reason = "READ_FAILED"


class BadVersionError(HandshakeError):
    """The act's leading version byte is not 0."""

    reason = "BAD_VERSION"

    def __init__(self, act: int, version: int) -> None:
        self.version = version
        super().__init__(act, f"unknown handshake version {version}")


class BadPublicKeyError(HandshakeError):
    """A key in the act is not a compressed secp256k1 point."""

    reason = "BAD_PUBKEY"


class BadTagError(HandshakeError):
    """A Poly1305 tag did not verify: the peer does not know our key, or the act was altered.

    ``code`` is ``ACT3_BAD_CIPHERTEXT`` for the tag over act three's encrypted static key,
    ``ACTn_BAD_TAG`` for the zero-length payloads, as in the vectors.
    """

    reason = "BAD_TAG"

    def __init__(self, act: int, detail: str, *, ciphertext: bool = False) -> None:
        super().__init__(act, detail)
        if ciphertext:
            self.code = f"ACT{act}_BAD_CIPHERTEXT"


class FrameError(NoiseError):
    """A transport frame was refused after the handshake."""


class DecryptionError(FrameError):
    """A length header or a body failed its MAC (forged, reordered, replayed or corrupted)."""


class FrameLengthError(FrameError):
    """A header or body handed to the decoder has the wrong size (a truncated frame)."""


class FrameTooLargeError(FrameError):
    """The authenticated length header announces more than this side accepts."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"peer announced a {length}-byte message; the limit is {limit}")


class SessionFailedError(FrameError):
    """The session already failed; its receive nonce no longer matches the peer's."""


class MessageTooLargeError(ValueError):
    """A message to send is over the limit (a local mistake, not the peer's)."""


# --- primitives -------------------------------------------------------------------------------------
def _nonce(n: int) -> bytes:
    # Noise convention: 32 zero bits, then the counter as 64-bit little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def encrypt_with_ad(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    """BOLT 8 ``encryptWithAD``: ChaCha20-Poly1305 (RFC 8439), ciphertext followed by the tag."""
    return ChaCha20Poly1305(key).encrypt(_nonce(n), plaintext, ad)


def decrypt_with_ad(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """BOLT 8 ``decryptWithAD``; raises ``cryptography.exceptions.InvalidTag`` on a bad MAC."""
    return ChaCha20Poly1305(key).decrypt(_nonce(n), ciphertext, ad)


def hkdf_two_keys(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """``HKDF(salt, ikm)`` of BOLT 8: RFC 5869 with SHA-256, empty info, 64 bytes cut in two."""
    out = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=b"").derive(ikm)
    return out[:32], out[32:]


def _sha256(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def validate_public_key(data: bytes) -> bytes:
    """``data`` if it is a 33-byte compressed secp256k1 point, else ``ValueError``."""
    if len(data) != PUBKEY_SIZE or data[0] not in (2, 3):
        raise ValueError("not a 33-byte compressed secp256k1 public key")
    coincurve.PublicKey(bytes(data))  # raises ValueError when x is not on the curve
    return bytes(data)


class SecretKey(Protocol):
    """Anything holding a 32-byte secp256k1 secret, e.g. ``appliance.identity.NodeKey``."""

    @property
    def secret(self) -> bytes: ...


class Keypair:
    """A secp256k1 key pair: a node's static identity or one handshake's ephemeral key.

    The box's static key comes from ``appliance.identity`` (label ``noise-static``):
    ``Keypair.of(derive_secp256k1(hsm_secret, "noise-static"))``.
    """

    __slots__ = ("_key", "public")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = coincurve.PrivateKey(bytes(secret))  # refuses 0 and values >= n
        #: compressed (33-byte) public key: the node id
        self.public: bytes = self._key.public_key.format(compressed=True)

    @classmethod
    def generate(cls) -> Keypair:
        """A fresh key from the OS's CSPRNG (coincurve draws it with ``os.urandom``)."""
        return cls(coincurve.PrivateKey().secret)

    @classmethod
    def of(cls, key: SecretKey) -> Keypair:
        """``key`` itself if it is a Keypair, else a Keypair of its secret."""
        return key if isinstance(key, Keypair) else cls(key.secret)

    @property
    def secret(self) -> bytes:
        return bytes(self._key.secret)

    def ecdh(self, remote_public: bytes) -> bytes:
        """BOLT 8 ``ECDH``: SHA-256 of the compressed shared point (libsecp256k1's default hash)."""
        return bytes(self._key.ecdh(remote_public))

    def __repr__(self) -> str:  # never the private half: reprs end up in logs
        return f"Keypair(public={self.public.hex()})"


# --- transport phase --------------------------------------------------------------------------------
class CipherState:
    """One direction's key, nonce and chaining key, rotating the key every 1000 nonces."""

    __slots__ = ("_aead", "_ck", "_key", "_nonce")

    def __init__(self, key: bytes, chaining_key: bytes) -> None:
        if len(key) != 32 or len(chaining_key) != 32:
            raise ValueError("keys are 32 bytes")
        self._key = bytes(key)
        self._ck = bytes(chaining_key)
        self._nonce = 0
        self._aead = ChaCha20Poly1305(self._key)  # built once per key: it is per-message hot

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def chaining_key(self) -> bytes:
        return self._ck

    @property
    def nonce(self) -> int:
        return self._nonce

    def _advance(self) -> None:
        self._nonce += 1
        if self._nonce == ROTATION_INTERVAL:
            self._ck, self._key = hkdf_two_keys(self._ck, self._key)
            self._aead = ChaCha20Poly1305(self._key)
            self._nonce = 0

    def encrypt(self, plaintext: bytes) -> bytes:
        out = self._aead.encrypt(_nonce(self._nonce), plaintext, None)
        self._advance()
        return out

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            out = self._aead.decrypt(_nonce(self._nonce), ciphertext, None)
        except InvalidTag:
            raise DecryptionError(f"bad MAC at nonce {self._nonce}") from None
        self._advance()
        return out


class NoiseSession:
    """The transport phase: frames out (``encrypt``), frames in (``decrypt_length``, ``decrypt_body``).

    Reading a frame is two steps so a stream reader never over-reads: read exactly
    :data:`HEADER_SIZE` bytes, ``n = decrypt_length(header)``, read exactly ``n + 16``
    bytes, ``decrypt_body(body)``. :class:`FrameDecoder` does the same from arbitrary chunks.
    """

    def __init__(self, *, send_key: bytes, recv_key: bytes, chaining_key: bytes, local_static: bytes,
                 remote_static: bytes, handshake_hash: bytes, initiator: bool,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        if not 0 <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be within 0..{MAX_MESSAGE_SIZE}")
        # Each direction rotates on its own from the same chaining key (BOLT 8).
        self.send_cipher = CipherState(send_key, chaining_key)
        self.recv_cipher = CipherState(recv_key, chaining_key)
        self.local_static = local_static
        #: the peer's static public key (its node id): what a whitelist checks
        self.remote_static = remote_static
        #: the final handshake hash ``h``, equal on both sides: a channel binding value
        self.handshake_hash = handshake_hash
        self.initiator = initiator
        self.max_message_size = max_message_size
        self._pending: int | None = None  # body length announced by the last header
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def pending_body_size(self) -> int | None:
        """Bytes ``decrypt_body`` expects (length + MAC), or None when a header is due."""
        return None if self._pending is None else self._pending + MAC_SIZE

    def encrypt(self, message: bytes) -> bytes:
        """The frame to send for ``message`` (``len(message) + 34`` bytes)."""
        if len(message) > MAX_MESSAGE_SIZE:
            raise MessageTooLargeError(f"{len(message)}-byte message; BOLT 8 allows {MAX_MESSAGE_SIZE}")
        header = self.send_cipher.encrypt(len(message).to_bytes(2, "big"))
        return header + self.send_cipher.encrypt(message)

    def _check(self) -> None:
        if self._failed:
            raise SessionFailedError("the session failed earlier and cannot continue")

    def decrypt_length(self, header: bytes) -> int:
        """Authenticate an 18-byte length header; the body that follows is ``result + 16`` bytes."""
        self._check()
        if self._pending is not None:
            raise RuntimeError("decrypt_body is due before the next header")
        try:
            if len(header) != HEADER_SIZE:
                raise FrameLengthError(f"length header of {len(header)} bytes, not {HEADER_SIZE}")
            length = int.from_bytes(self.recv_cipher.decrypt(header), "big")
            if length > self.max_message_size:
                raise FrameTooLargeError(length, self.max_message_size)
        except FrameError:
            self._failed = True
            raise
        self._pending = length
        return length

    def decrypt_body(self, body: bytes) -> bytes:
        """Authenticate and decrypt the body announced by the last :meth:`decrypt_length`."""
        self._check()
        if self._pending is None:
            raise RuntimeError("decrypt_length is due before a body")
        try:
            if len(body) != self._pending + MAC_SIZE:
                raise FrameLengthError(
                    f"body of {len(body)} bytes, the header announced {self._pending + MAC_SIZE}")
            message = self.recv_cipher.decrypt(body)
        except FrameError:
            self._failed = True
            raise
        self._pending = None
        return message

    def decrypt(self, frame: bytes) -> bytes:
        """One whole frame (header and body) back to its message."""
        self.decrypt_length(frame[:HEADER_SIZE])
        return self.decrypt_body(frame[HEADER_SIZE:])


class FrameDecoder:
    """Messages from arbitrary received chunks (for protocols that hand over whatever arrived).

    After each ``feed`` at most one incomplete frame (< 65569 bytes) stays buffered.
    """

    def __init__(self, session: NoiseSession) -> None:
        self._session = session
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data`` (possibly none); raises :class:`FrameError`."""
        if self._session.failed:
            raise SessionFailedError("the session failed earlier and cannot continue")
        self._buf += data
        messages: list[bytes] = []
        while True:
            need = self._session.pending_body_size
            if need is None:
                if len(self._buf) < HEADER_SIZE:
                    return messages
                header = bytes(self._buf[:HEADER_SIZE])
                del self._buf[:HEADER_SIZE]
                self._session.decrypt_length(header)
                continue
            if len(self._buf) < need:
                return messages
            body = bytes(self._buf[:need])
            del self._buf[:need]
            messages.append(self._session.decrypt_body(body))


# --- handshake --------------------------------------------------------------------------------------
class _Stage(Enum):
    START = "start"
    WAIT_ACT_TWO = "wait act two"
    WAIT_ACT_ONE = "wait act one"
    WAIT_ACT_THREE = "wait act three"
    DONE = "done"
    FAILED = "failed"


class _Symmetric:
    """The running handshake hash ``h`` and chaining key ``ck``."""

    def __init__(self, responder_static: bytes) -> None:
        h = _sha256(PROTOCOL_NAME)
        self.ck = h
        self.h = _sha256(_sha256(h, PROLOGUE), responder_static)

    def mix_hash(self, data: bytes) -> None:
        self.h = _sha256(self.h, data)

    def mix_key(self, shared: bytes) -> bytes:
        """``ck, temp_k = HKDF(ck, ss)``; returns ``temp_k``."""
        self.ck, temp_k = hkdf_two_keys(self.ck, shared)
        return temp_k


def _parse_act(act: int, message: bytes, size: int) -> None:
    if len(message) != size:
        raise ActLengthError(act, f"{len(message)} bytes, expected exactly {size}")
    if message[0] != HANDSHAKE_VERSION:
        raise BadVersionError(act, message[0])


def _parse_key(act: int, data: bytes) -> bytes:
    try:
        return validate_public_key(data)
    except ValueError:
        raise BadPublicKeyError(act, f"invalid public key {data[:1].hex()}...") from None


def _open(act: int, key: bytes, n: int, ad: bytes, ciphertext: bytes, *,
          ciphertext_tag: bool = False) -> bytes:
    try:
        return decrypt_with_ad(key, n, ad, ciphertext)
    except InvalidTag:
        raise BadTagError(act, "MAC check failed", ciphertext=ciphertext_tag) from None


class _Handshake:
    def __init__(self, local_static: Keypair, ephemeral: Keypair | None, max_message_size: int) -> None:
        if not 0 <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be within 0..{MAX_MESSAGE_SIZE}")
        self._s = local_static
        self._e = ephemeral if ephemeral is not None else Keypair.generate()
        self._max = max_message_size
        self._session: NoiseSession | None = None
        self._stage = _Stage.START

    def _expect(self, stage: _Stage) -> None:
        if self._stage is not stage:
            raise RuntimeError(f"handshake is at stage '{self._stage.value}', not '{stage.value}'")

    @property
    def complete(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> NoiseSession:
        if self._session is None:
            raise RuntimeError("the handshake has not completed")
        return self._session

    def _finish(self, sym: _Symmetric, remote_static: bytes, initiator: bool) -> NoiseSession:
        first, second = hkdf_two_keys(sym.ck, b"")
        send_key, recv_key = (first, second) if initiator else (second, first)
        self._session = NoiseSession(
            send_key=send_key, recv_key=recv_key, chaining_key=sym.ck, local_static=self._s.public,
            remote_static=remote_static, handshake_hash=sym.h, initiator=initiator,
            max_message_size=self._max)
        self._stage = _Stage.DONE
        return self._session


class Initiator(_Handshake):
    """The connecting side, which must know the responder's static key beforehand.

    ``act_one()`` -> send; receive 50 bytes -> ``read_act_two()`` -> send the act three it
    returns; ``session`` is then ready. ``ephemeral`` is for test vectors only.
    """

    def __init__(self, local_static: Keypair, remote_static: bytes, *, ephemeral: Keypair | None = None,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__(local_static, ephemeral, max_message_size)
        self.remote_static = validate_public_key(remote_static)
        self._sym = _Symmetric(self.remote_static)

    def act_one(self) -> bytes:
        """``-> e, es``: the 50 bytes to send first."""
        self._expect(_Stage.START)
        sym, e = self._sym, self._e
        sym.mix_hash(e.public)
        temp_k1 = sym.mix_key(e.ecdh(self.remote_static))
        c = encrypt_with_ad(temp_k1, 0, sym.h, b"")
        sym.mix_hash(c)
        self._stage = _Stage.WAIT_ACT_TWO
        return bytes((HANDSHAKE_VERSION,)) + e.public + c

    def read_act_two(self, message: bytes) -> bytes:
        """``<- e, ee`` checked, then ``-> s, se``: returns act three (66 bytes) to send."""
        self._expect(_Stage.WAIT_ACT_TWO)
        self._stage = _Stage.FAILED  # until it succeeds
        sym = self._sym
        _parse_act(2, message, ACT_TWO_SIZE)
        re = _parse_key(2, message[1:34])
        sym.mix_hash(re)
        temp_k2 = sym.mix_key(self._e.ecdh(re))
        _open(2, temp_k2, 0, sym.h, message[34:])
        sym.mix_hash(message[34:])
        # Act three: our static key under temp_k2 (nonce 1), then se.
        c = encrypt_with_ad(temp_k2, 1, sym.h, self._s.public)
        sym.mix_hash(c)
        temp_k3 = sym.mix_key(self._s.ecdh(re))
        t = encrypt_with_ad(temp_k3, 0, sym.h, b"")
        self._finish(sym, self.remote_static, initiator=True)
        return bytes((HANDSHAKE_VERSION,)) + c + t


class Responder(_Handshake):
    """The listening side: receive 50 bytes -> ``read_act_one()`` -> send act two; receive
    66 bytes -> ``read_act_three()``. Then ``remote_static`` names the peer; a caller that
    keeps a whitelist checks it before trusting the session."""

    def __init__(self, local_static: Keypair, *, ephemeral: Keypair | None = None,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__(local_static, ephemeral, max_message_size)
        self._sym = _Symmetric(local_static.public)
        self._temp_k2 = b""
        self._re = b""
        self._stage = _Stage.WAIT_ACT_ONE

    @property
    def remote_static(self) -> bytes:
        """The initiator's static public key, known once act three verified."""
        return self.session.remote_static

    def read_act_one(self, message: bytes) -> bytes:
        """``-> e, es`` checked, then ``<- e, ee``: returns act two (50 bytes) to send."""
        self._expect(_Stage.WAIT_ACT_ONE)
        self._stage = _Stage.FAILED
        sym = self._sym
        _parse_act(1, message, ACT_ONE_SIZE)
        re = _parse_key(1, message[1:34])
        sym.mix_hash(re)
        temp_k1 = sym.mix_key(self._s.ecdh(re))
        # A bad tag here means the initiator does not know our static key: say nothing.
        _open(1, temp_k1, 0, sym.h, message[34:])
        sym.mix_hash(message[34:])
        e = self._e
        sym.mix_hash(e.public)
        self._temp_k2 = sym.mix_key(e.ecdh(re))
        c = encrypt_with_ad(self._temp_k2, 0, sym.h, b"")
        sym.mix_hash(c)
        self._re = re
        self._stage = _Stage.WAIT_ACT_THREE
        return bytes((HANDSHAKE_VERSION,)) + e.public + c

    def read_act_three(self, message: bytes) -> NoiseSession:
        """``-> s, se`` checked: the session, whose ``remote_static`` is the initiator's key."""
        self._expect(_Stage.WAIT_ACT_THREE)
        self._stage = _Stage.FAILED
        sym = self._sym
        _parse_act(3, message, ACT_THREE_SIZE)
        c, t = message[1:50], message[50:]
        rs = _parse_key(3, _open(3, self._temp_k2, 1, sym.h, c, ciphertext_tag=True))
        sym.mix_hash(c)
        temp_k3 = sym.mix_key(self._e.ecdh(rs))
        _open(3, temp_k3, 0, sym.h, t)
        return self._finish(sym, rs, initiator=False)
