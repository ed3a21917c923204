"""Output scripts: Electrum scripthashes, type classification, and addresses.

Classification mirrors bitcoind's ``Solver`` so ``ScriptType`` values equal the
``scriptPubKey.type`` strings bitcoind prints. Addresses cover base58check
P2PKH/P2SH and BIP173 bech32 / BIP350 bech32m segwit outputs of any version;
both codecs are implemented here (each is a page of well-specified code).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

from appliance.chain.encoding import BytesLike

__all__ = [
    "NETWORK_PARAMS",
    "AddressError",
    "Bech32Encoding",
    "NetworkParams",
    "ScriptType",
    "address_to_script",
    "base58_decode",
    "base58_encode",
    "base58check_decode",
    "base58check_encode",
    "bech32_decode",
    "bech32_encode",
    "classify_script",
    "decode_segwit_address",
    "encode_segwit_address",
    "network_params",
    "script_to_address",
    "script_to_scripthash",
    "scripthash_hex",
]


class AddressError(ValueError):
    """An address string that is malformed, has a bad checksum, or is for another network."""


# --------------------------------------------------------------------------- networks


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """What an address needs to know about a network."""

    name: str
    hrp: str
    p2pkh_version: int
    p2sh_version: int


_MAINNET = NetworkParams("mainnet", "bc", 0x00, 0x05)
_TESTNET = NetworkParams("testnet", "tb", 0x6F, 0xC4)

#: Keyed by Hearth's network names (``config.NETWORKS``).
NETWORK_PARAMS: dict[str, NetworkParams] = {
    "mainnet": _MAINNET,
    "testnet": _TESTNET,
    "testnet4": NetworkParams("testnet4", "tb", 0x6F, 0xC4),
    "signet": NetworkParams("signet", "tb", 0x6F, 0xC4),
    "regtest": NetworkParams("regtest", "bcrt", 0x6F, 0xC4),
}
# bitcoind's chain names, so either spelling works.
_ALIASES = {"main": "mainnet", "test": "testnet"}


def network_params(network: str | NetworkParams) -> NetworkParams:
    """Look up a network by Hearth name (``mainnet``) or bitcoind chain name (``main``)."""
    if isinstance(network, NetworkParams):
        return network
    try:
        return NETWORK_PARAMS[_ALIASES.get(network, network)]
    except KeyError:
        raise ValueError(f"unknown network {network!r}") from None


# --------------------------------------------------------------------------- scripthash


def script_to_scripthash(script_pubkey: BytesLike) -> bytes:
    """Electrum scripthash bytes: sha256(script) reversed, so ``.hex()`` is the protocol form.

    Note the order: these are already display-order bytes, so use ``.hex()`` (not
    ``hash_to_hex_str``); ``hex_str_to_hash(scripthash_hex(s))`` is plain sha256(s).
    """
    return hashlib.sha256(script_pubkey).digest()[::-1]


def scripthash_hex(script_pubkey: BytesLike) -> str:
    """The Electrum protocol's scripthash string for ``script_pubkey``."""
    return script_to_scripthash(script_pubkey).hex()


# --------------------------------------------------------------------------- classification

_OP_0 = 0x00
_OP_PUSHDATA1 = 0x4C
_OP_PUSHDATA2 = 0x4D
_OP_PUSHDATA4 = 0x4E
_OP_1 = 0x51
_OP_16 = 0x60
_OP_RETURN = 0x6A
_OP_DUP = 0x76
_OP_EQUAL = 0x87
_OP_EQUALVERIFY = 0x88
_OP_HASH160 = 0xA9
_OP_CHECKSIG = 0xAC
_OP_CHECKMULTISIG = 0xAE
_MAX_PUBKEYS_PER_MULTISIG = 20


class ScriptType(StrEnum):
    """Output script type; each value is bitcoind's name for it."""

    P2PK = "pubkey"
    P2PKH = "pubkeyhash"
    P2SH = "scripthash"
    MULTISIG = "multisig"
    OP_RETURN = "nulldata"
    P2WPKH = "witness_v0_keyhash"
    P2WSH = "witness_v0_scripthash"
    P2TR = "witness_v1_taproot"
    ANCHOR = "anchor"
    WITNESS_UNKNOWN = "witness_unknown"
    UNKNOWN = "nonstandard"


def _get_op(script: bytes, pc: int) -> tuple[int, bytes, int] | None:
    """(opcode, pushed data, next pc) at ``pc``, or None if a push runs off the end."""
    end = len(script)
    opcode = script[pc]
    pc += 1
    if opcode > _OP_PUSHDATA4:
        return opcode, b"", pc
    if opcode < _OP_PUSHDATA1:
        size = opcode
    else:
        width = 1 if opcode == _OP_PUSHDATA1 else 2 if opcode == _OP_PUSHDATA2 else 4
        if pc + width > end:
            return None
        size = int.from_bytes(script[pc : pc + width], "little")
        pc += width
    if pc + size > end:
        return None
    return opcode, script[pc : pc + size], pc + size


def _is_push_only(script: bytes, pc: int) -> bool:
    while pc < len(script):
        op = _get_op(script, pc)
        if op is None or op[0] > _OP_16:
            return False
        pc = op[2]
    return True


def _pubkey_size_ok(data: bytes) -> bool:
    """bitcoind's ``CPubKey::ValidSize``: length agrees with the header byte."""
    if not data:
        return False
    if data[0] in (2, 3):
        return len(data) == 33
    if data[0] in (4, 6, 7):
        return len(data) == 65
    return False


def _script_number(opcode: int, data: bytes, low: int, high: int) -> int | None:
    """A small number in a multisig template: OP_1..OP_16, or a minimal push of 17..20."""
    if _OP_1 <= opcode <= _OP_16:
        value = opcode - _OP_1 + 1
    elif opcode == 1 and len(data) == 1 and data[0] > 16 and data[0] < 0x80:
        # Minimal encoding: 1..16 must use OP_N and a set top bit would be negative.
        value = data[0]
    else:
        return None
    return value if low <= value <= high else None


def _is_multisig(script: bytes) -> bool:
    if not script or script[-1] != _OP_CHECKMULTISIG:
        return False
    op = _get_op(script, 0)
    if op is None:
        return False
    required = _script_number(op[0], op[1], 1, _MAX_PUBKEYS_PER_MULTISIG)
    if required is None:
        return False
    keys = 0
    pc = op[2]
    while pc < len(script):
        op = _get_op(script, pc)
        if op is None or not _pubkey_size_ok(op[1]):
            break
        keys += 1
        pc = op[2]
    else:
        return False
    if op is None:
        return False
    count = _script_number(op[0], op[1], required, _MAX_PUBKEYS_PER_MULTISIG)
    return count == keys and op[2] + 1 == len(script)


def _witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) if ``script`` is a witness program (BIP141), else None."""
    size = len(script)
    if size < 4 or size > 42:
        return None
    first = script[0]
    if first != _OP_0 and not _OP_1 <= first <= _OP_16:
        return None
    if script[1] + 2 != size:
        return None
    return (0 if first == _OP_0 else first - _OP_1 + 1), script[2:]


def classify_script(script_pubkey: BytesLike) -> ScriptType:
    """The output type, following bitcoind's ``Solver`` rule for rule."""
    script = bytes(script_pubkey)
    size = len(script)
    if size == 23 and script[0] == _OP_HASH160 and script[1] == 20 and script[22] == _OP_EQUAL:
        return ScriptType.P2SH
    witness = _witness_program(script)
    if witness is not None:
        version, program = witness
        if version == 0 and len(program) == 20:
            return ScriptType.P2WPKH
        if version == 0 and len(program) == 32:
            return ScriptType.P2WSH
        if version == 1 and len(program) == 32:
            return ScriptType.P2TR
        if script == b"\x51\x02\x4e\x73":
            return ScriptType.ANCHOR
        if version != 0:
            return ScriptType.WITNESS_UNKNOWN
        return ScriptType.UNKNOWN
    if size >= 1 and script[0] == _OP_RETURN and _is_push_only(script, 1):
        return ScriptType.OP_RETURN
    if (
        size in (35, 67)
        and script[0] == size - 2
        and script[-1] == _OP_CHECKSIG
        and _pubkey_size_ok(script[1:-1])
    ):
        return ScriptType.P2PK
    if (
        size == 25
        and script[0] == _OP_DUP
        and script[1] == _OP_HASH160
        and script[2] == 20
        and script[23] == _OP_EQUALVERIFY
        and script[24] == _OP_CHECKSIG
    ):
        return ScriptType.P2PKH
    if _is_multisig(script):
        return ScriptType.MULTISIG
    return ScriptType.UNKNOWN


# --------------------------------------------------------------------------- base58

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: i for i, char in enumerate(_B58_ALPHABET)}


def base58_encode(data: BytesLike) -> str:
    """Plain base58 (no checksum); each leading zero byte becomes a ``1``."""
    raw = bytes(data)
    zeros = len(raw) - len(raw.lstrip(b"\x00"))
    number = int.from_bytes(raw, "big")
    chars: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        chars.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(chars))


def base58_decode(text: str) -> bytes:
    """Inverse of :func:`base58_encode`."""
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise AddressError(f"invalid base58 character {char!r}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * zeros + body


def base58check_encode(payload: BytesLike) -> str:
    """Base58 of payload plus the first 4 bytes of its double SHA-256."""
    raw = bytes(payload)
    check = hashlib.sha256(hashlib.sha256(raw).digest()).digest()[:4]
    return base58_encode(raw + check)


def base58check_decode(text: str) -> bytes:
    """The payload of a base58check string; raises AddressError on a bad checksum."""
    raw = base58_decode(text)
    if len(raw) < 4:
        raise AddressError("base58check string too short")
    payload, check = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise AddressError("base58check checksum mismatch")
    return payload


# --------------------------------------------------------------------------- bech32


class Bech32Encoding(Enum):
    """Checksum variant: BIP173 bech32 (witness v0) or BIP350 bech32m (v1+)."""

    BECH32 = 1
    BECH32M = 0x2BC830A3


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {char: i for i, char in enumerate(_BECH32_CHARSET)}
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_MAX_LEN = 90


def _gen_xor(top: int) -> int:
    chk = 0
    for i in range(5):
        if (top >> i) & 1:
            chk ^= _BECH32_GEN[i]
    return chk


# The generators' XOR for each 5-bit top: one lookup per character instead of five
# tests (a wallet's thousands of derived addresses are decoded on the hot path).
_BECH32_GEN_TABLE = tuple(_gen_xor(top) for top in range(32))


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    table = _BECH32_GEN_TABLE
    for value in values:
        chk = (chk & 0x1FFFFFF) << 5 ^ value ^ table[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: Sequence[int], encoding: Bech32Encoding) -> str:
    """Encode 5-bit groups ``data`` under ``hrp`` with the given checksum; lowercase out."""
    if any(not 0 <= d < 32 for d in data):
        raise ValueError("bech32 data must be 5-bit groups (0..31)")
    hrp = hrp.lower()
    values = _hrp_expand(hrp) + list(data)
    polymod = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ encoding.value
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in [*data, *checksum])


def bech32_decode(text: str) -> tuple[str, list[int], Bech32Encoding]:
    """(hrp, 5-bit data without checksum, checksum variant); raises AddressError."""
    # Printable ASCII without the space (33..126), checked in C: this runs per address.
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise AddressError("bech32 string has a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise AddressError("bech32 string mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or sep + 7 > len(text) or len(text) > _BECH32_MAX_LEN:
        raise AddressError("bech32 string has a bad separator position or length")
    hrp = text[:sep]
    try:
        data = [_BECH32_INDEX[c] for c in text[sep + 1 :]]
    except KeyError as exc:
        raise AddressError(f"invalid bech32 character {exc.args[0]!r}") from None
    check = _polymod(_hrp_expand(hrp) + data)
    for encoding in Bech32Encoding:
        if check == encoding.value:
            return hrp, data[:-6], encoding
    raise AddressError("bech32 checksum mismatch")


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup bit strings (8->5 with padding to encode, 5->8 strict to decode)."""
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (acc << (to_bits - bits)) & max_value:
        raise AddressError("invalid padding in bech32 data")
    return out


def _check_witness_program(version: int, program: bytes) -> None:
    if not 0 <= version <= 16:
        raise AddressError(f"invalid witness version {version}")
    if not 2 <= len(program) <= 40:
        raise AddressError(f"invalid witness program length {len(program)}")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"invalid v0 witness program length {len(program)}")


def encode_segwit_address(hrp: str, version: int, program: BytesLike) -> str:
    """Segwit address: bech32 for version 0, bech32m for 1..16."""
    prog = bytes(program)
    _check_witness_program(version, prog)
    encoding = Bech32Encoding.BECH32 if version == 0 else Bech32Encoding.BECH32M
    return bech32_encode(hrp, [version, *_convert_bits(prog, 8, 5, True)], encoding)


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """(witness version, program) of ``address``, which must carry ``hrp``."""
    got_hrp, data, encoding = bech32_decode(address)
    if got_hrp != hrp:
        raise AddressError(f"address is for hrp {got_hrp!r}, expected {hrp!r}")
    if not data:
        raise AddressError("segwit address has no data")
    version = data[0]
    program = bytes(_convert_bits(data[1:], 5, 8, False))
    _check_witness_program(version, program)
    expected = Bech32Encoding.BECH32 if version == 0 else Bech32Encoding.BECH32M
    if encoding is not expected:
        raise AddressError(f"witness v{version} needs {expected.name.lower()} checksum")
    return version, program


# --------------------------------------------------------------------------- addresses


def script_to_address(
    script_pubkey: BytesLike, network: str | NetworkParams = "mainnet"
) -> str | None:
    """The address bitcoind shows for this output, or None when it has none.

    None for P2PK, bare multisig, OP_RETURN and non-standard scripts, as bitcoind.
    """
    params = network_params(network)
    script = bytes(script_pubkey)
    kind = classify_script(script)
    if kind is ScriptType.P2PKH:
        return base58check_encode(bytes((params.p2pkh_version,)) + script[3:23])
    if kind is ScriptType.P2SH:
        return base58check_encode(bytes((params.p2sh_version,)) + script[2:22])
    witness = _witness_program(script)
    if witness is None:
        return None
    version, program = witness
    if version == 0 and kind is ScriptType.UNKNOWN:
        return None  # a v0 program of the wrong length has no address
    return encode_segwit_address(params.hrp, version, program)


def address_to_script(address: str, network: str | NetworkParams = "mainnet") -> bytes:
    """The scriptPubKey an address pays to; raises AddressError if invalid for ``network``."""
    params = network_params(network)
    if address.lower().startswith(params.hrp + "1"):
        version, program = decode_segwit_address(params.hrp, address)
        opcode = _OP_0 if version == 0 else _OP_1 + version - 1
        return bytes((opcode, len(program))) + program
    try:
        payload = base58check_decode(address)
    except AddressError as exc:
        raise AddressError(f"not a valid {params.name} address: {address!r} ({exc})") from None
    if len(payload) == 21 and payload[0] == params.p2pkh_version:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if len(payload) == 21 and payload[0] == params.p2sh_version:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise AddressError(f"not a {params.name} address: {address!r}")
