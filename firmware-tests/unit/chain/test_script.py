"""Scripthashes, script classification, base58check and bech32/bech32m addresses."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.chain.encoding import hex_str_to_hash
from appliance.chain.script import (
    NETWORK_PARAMS,
    AddressError,
    Bech32Encoding,
    ScriptType,
    address_to_script,
    base58_decode,
    base58_encode,
    base58check_decode,
    base58check_encode,
    bech32_decode,
    bech32_encode,
    classify_script,
    decode_segwit_address,
    encode_segwit_address,
    network_params,
    script_to_address,
    script_to_scripthash,
    scripthash_hex,
)

# --------------------------------------------------------------------------- scripthash


@pytest.mark.parametrize(
    ("address", "script", "scripthash"),
    [
        # The Electrum protocol docs' example: the genesis coinbase's P2PKH address.
        (
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac",
            "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161",
        ),
        (
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "0014751e76e8199196d454941c45d1b3a323f1433bd6",
            "9623df75239b5daa7f5f03042d325b51498c4bb7059c7748b17049bf96f73888",
        ),
    ],
)
def test_electrum_scripthash(address: str, script: str, scripthash: str) -> None:
    raw = bytes.fromhex(script)
    assert address_to_script(address).hex() == script
    assert scripthash_hex(raw) == scripthash
    assert script_to_scripthash(raw) == bytes.fromhex(scripthash)
    # The display-hex convention: back to internal order is the plain sha256 digest.
    assert hex_str_to_hash(scripthash) == hashlib.sha256(raw).digest()


def test_p2pkh_address_round_trip() -> None:
    script = bytes.fromhex("76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac")
    assert script_to_address(script) == "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
    assert address_to_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2") == script


# --------------------------------------------------------------------------- classification

PK33 = "21" + "02" + "11" * 32
PK33B = "21" + "03" + "22" * 32
PK65 = "41" + "04" + "33" * 64
GENESIS_P2PK = (
    "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f355"
    "04e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac"
)

CLASSIFY = [
    ("76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac", ScriptType.P2PKH),
    ("a91474f209f6ea907e2ea48f74fae05782ae8a66525787", ScriptType.P2SH),
    ("0014751e76e8199196d454941c45d1b3a323f1433bd6", ScriptType.P2WPKH),
    ("00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262", ScriptType.P2WSH),
    ("512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", ScriptType.P2TR),
    ("51024e73", ScriptType.ANCHOR),
    ("6002751e", ScriptType.WITNESS_UNKNOWN),
    ("5210751e76e8199196d454941c45d1b3a323", ScriptType.WITNESS_UNKNOWN),
    ("5128" + "75" * 40, ScriptType.WITNESS_UNKNOWN),
    ("0015" + "75" * 21, ScriptType.UNKNOWN),  # v0 must be 20 or 32 bytes
    ("5129" + "75" * 41, ScriptType.UNKNOWN),  # programs stop at 40 bytes
    (GENESIS_P2PK, ScriptType.P2PK),
    (PK33 + "ac", ScriptType.P2PK),
    ("2105" + "11" * 32 + "ac", ScriptType.UNKNOWN),  # 0x05 is no pubkey header
    ("51" + PK33 + PK33B + "52ae", ScriptType.MULTISIG),
    ("52" + PK65 + PK33 + PK33B + "53ae", ScriptType.MULTISIG),
    ("51" + PK33 * 17 + "0111" + "ae", ScriptType.MULTISIG),  # 17 keys: count pushed as data
    ("51" + PK33 + "52ae", ScriptType.UNKNOWN),  # says 2 keys, has 1
    ("52" + PK33 + "51ae", ScriptType.UNKNOWN),  # needs 2 of 1
    ("0101" + PK33 + "51ae", ScriptType.UNKNOWN),  # non-minimal push for 1
    ("51" + PK33 + "51ae51", ScriptType.UNKNOWN),  # trailing opcode
    ("51" + PK33 + "ae", ScriptType.UNKNOWN),  # no key count
    ("6a", ScriptType.OP_RETURN),
    ("6a04deadbeef", ScriptType.OP_RETURN),
    ("6a4c0401020304", ScriptType.OP_RETURN),
    ("6a24aa21a9ed" + "00" * 32, ScriptType.OP_RETURN),
    ("6a5160", ScriptType.OP_RETURN),
    ("6a76", ScriptType.UNKNOWN),  # OP_DUP is not a push
    ("6a05dead", ScriptType.UNKNOWN),  # truncated push
    ("", ScriptType.UNKNOWN),
    ("51", ScriptType.UNKNOWN),
    ("4c", ScriptType.UNKNOWN),
    ("76a914" + "00" * 20 + "88", ScriptType.UNKNOWN),
]


@pytest.mark.parametrize(("script", "kind"), CLASSIFY)
def test_classify(script: str, kind: ScriptType) -> None:
    assert classify_script(bytes.fromhex(script)) is kind
    assert classify_script(memoryview(bytes.fromhex(script))) is kind


def test_script_type_values_are_bitcoind_names() -> None:
    assert {t.value for t in ScriptType} == {
        "pubkey",
        "pubkeyhash",
        "scripthash",
        "multisig",
        "nulldata",
        "witness_v0_keyhash",
        "witness_v0_scripthash",
        "witness_v1_taproot",
        "anchor",
        "witness_unknown",
        "nonstandard",
    }


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        (s, k)
        for s, k in CLASSIFY
        if k in (ScriptType.P2PK, ScriptType.MULTISIG, ScriptType.OP_RETURN, ScriptType.UNKNOWN)
    ],
)
def test_no_address(script: str, kind: ScriptType) -> None:
    assert script_to_address(bytes.fromhex(script)) is None


@pytest.mark.parametrize(
    ("script", "network", "address"),
    [
        ("51024e73", "mainnet", "bc1pfeessrawgf"),
        ("51024e73", "regtest", "bcrt1pfeesnyr2tx"),
        ("51024e73", "signet", "tb1pfees9rn5nz"),
        (
            "0014751e76e8199196d454941c45d1b3a323f1433bd6",
            "regtest",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        ),
        (
            "0014751e76e8199196d454941c45d1b3a323f1433bd6",
            "testnet",
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
        ),
    ],
)
def test_network_addresses(script: str, network: str, address: str) -> None:
    raw = bytes.fromhex(script)
    assert script_to_address(raw, network) == address
    assert address_to_script(address, network) == raw


def test_network_params() -> None:
    assert network_params("main") is network_params("mainnet") is NETWORK_PARAMS["mainnet"]
    assert network_params("test").hrp == "tb"
    assert network_params("testnet4").p2pkh_version == 0x6F
    regtest = network_params("regtest")
    assert (regtest.hrp, regtest.p2pkh_version, regtest.p2sh_version) == ("bcrt", 0x6F, 0xC4)
    assert network_params(regtest) is regtest
    with pytest.raises(ValueError):
        network_params("litecoin")


# --------------------------------------------------------------------------- base58

# Bitcoin Core's src/test/data/base58_encode_decode.json.
BASE58 = [
    ("", ""),
    ("61", "2g"),
    ("626262", "a3gV"),
    ("636363", "aPEr"),
    ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
    ("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
    ("516b6fcd0f", "ABnLTmg"),
    ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
    ("572e4794", "3EFU7m"),
    ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
    ("10c8511e", "Rt5zm"),
    ("00000000000000000000", "1111111111"),
]


@pytest.mark.parametrize(("raw", "encoded"), BASE58)
def test_base58(raw: str, encoded: str) -> None:
    assert base58_encode(bytes.fromhex(raw)) == encoded
    assert base58_decode(encoded).hex() == raw


# Address entries of Bitcoin Core's historical base58_keys_valid.json: (address, hash160,
# is P2SH, is testnet).
BASE58_ADDRESSES = [
    ("1AGNa15ZQXAZUgFiqJ2i7Z2DPU2J6hW62i", "65a16059864a2fdbc7c99a4723a8395bc6f188eb", 0, 0),
    ("3CMNFxN1oHBc4R1EpboAL5yzHGgE611Xou", "74f209f6ea907e2ea48f74fae05782ae8a665257", 1, 0),
    ("mo9ncXisMeAoXwqcV5EWuyncbmCcQN4rVs", "53c0307d6851aa0ce7825ba883c6bd9ad242b486", 0, 1),
    ("2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br", "6349a418fc4578d10a372b54b45c280cc8c4382f", 1, 1),
    ("1Ax4gZtb7gAit2TivwejZHYtNNLT18PUXJ", "6d23156cbbdcc82a5a47eee4c2c7c583c18b6bf4", 0, 0),
    ("3QjYXhTkvuj8qPaXHTTWb5wjXhdsLAAWVy", "fcc5460dd6e2487c7d75b1963625da0e8f4c5975", 1, 0),
    ("n3ZddxzLvAY9o7184TB4c6FJasAybsw4HZ", "f1d470f9b02370fdec2e6b708b08ac431bf7a5f7", 0, 1),
    ("2NBFNJTktNa7GZusGbDbGKRZTxdK9VVez3n", "c579342c2c4c9220205e2cdc285617040c924a0a", 1, 1),
    ("1C5bSj1iEGUgSTbziymG7Cn18ENQuT36vv", "7987ccaa53d02c8873487ef919677cd3db7a6912", 0, 0),
    ("3AnNxabYGoTxYiTEZwFEnerUoeFXK2Zoks", "63bcc565f9e68ee0189dd5cc67f1b0e5f02f45cb", 1, 0),
    ("mhaMcBxNh5cqXm4aTQ6EcVbKtfL6LGyK2H", "1694f5bc1a7295b600f40018a618a6ea48eeb498", 0, 1),
    ("2MxgPqX1iThW3oZVk9KoFcE5M4JpiETssVN", "3b9b3fd7a50d4f08d1a5b0f62f644fa7115ae2f3", 1, 1),
]


@pytest.mark.parametrize(("address", "hash160", "p2sh", "testnet"), BASE58_ADDRESSES)
def test_base58_addresses(address: str, hash160: str, p2sh: int, testnet: int) -> None:
    if p2sh:
        script = bytes.fromhex("a914" + hash160 + "87")
        assert classify_script(script) is ScriptType.P2SH
    else:
        script = bytes.fromhex("76a914" + hash160 + "88ac")
        assert classify_script(script) is ScriptType.P2PKH
    networks = ["testnet", "testnet4", "signet", "regtest"] if testnet else ["mainnet"]
    for network in networks:
        assert script_to_address(script, network) == address
        assert address_to_script(address, network) == script
    wrong = "mainnet" if testnet else "regtest"
    with pytest.raises(AddressError):
        address_to_script(address, wrong)


@pytest.mark.parametrize(
    "address",
    [
        "1AGNa15ZQXAZUgFiqJ2i7Z2DPU2J6hW62j",  # checksum
        "1AGNa15ZQXAZUgFiqJ2i7Z2DPU2J6hW620",  # '0' is not base58
        "1AGNa15ZQXAZUgFiqJ2i7Z2DPU2J6hW6",  # truncated
        "",
        "1111",
        base58check_encode(b"\x00" + bytes(19)),  # 19-byte hash
        base58check_encode(b"\x30" + bytes(20)),  # unknown version byte
    ],
)
def test_bad_base58_addresses(address: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(address)


def test_base58check() -> None:
    payload = b"\x00" + bytes(range(20))
    assert base58check_decode(base58check_encode(payload)) == payload
    with pytest.raises(AddressError, match="short"):
        base58check_decode("1")


@given(st.binary(max_size=60))
def test_base58_round_trip(raw: bytes) -> None:
    assert base58_decode(base58_encode(raw)) == raw
    assert base58check_decode(base58check_encode(raw)) == raw


# --------------------------------------------------------------------------- bech32

# BIP173 and BIP350 test vectors.
VALID_BECH32 = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",  # 90 characters, the maximum
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
VALID_BECH32M = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
INVALID_BECH32 = [
    " 1nwldj5",
    "\x7f1axkwrx",
    "\x801eym55h",
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
]
INVALID_BECH32M = [
    " 1xj0phk",
    "\x7f1g6xzxy",
    "\x801vctc34",
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",
    "1qyrz8wqd2c9m",
    "y1b0jsk6g",
    "lt1igcx5c0",
    "in1muywd",
    "mm1crxm3i",
    "au1s5cgom",
    "M1VUXWEZ",
    "16plkw9",
    "1p2gdwpf",
]


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(s, Bech32Encoding.BECH32) for s in VALID_BECH32]
    + [(s, Bech32Encoding.BECH32M) for s in VALID_BECH32M],
)
def test_valid_bech32_strings(text: str, encoding: Bech32Encoding) -> None:
    hrp, data, got = bech32_decode(text)
    assert got is encoding
    assert bech32_encode(hrp, data, encoding) == text.lower()
    # Flipping one checksum character must break it.
    pos = text.rfind("1") + 1
    broken = text[:pos] + chr(ord(text[pos]) ^ 1) + text[pos + 1 :]
    with pytest.raises(AddressError):
        bech32_decode(broken)


@pytest.mark.parametrize("text", INVALID_BECH32 + INVALID_BECH32M)
def test_invalid_bech32_strings(text: str) -> None:
    with pytest.raises(AddressError):
        bech32_decode(text)


def test_bech32_encode_rejects_non_5_bit_data() -> None:
    with pytest.raises(ValueError):
        bech32_encode("bc", [32], Bech32Encoding.BECH32)
    with pytest.raises(ValueError):
        bech32_encode("bc", [-1], Bech32Encoding.BECH32)


VALID_SEGWIT = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]
INVALID_SEGWIT = [
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",
    "bc1pw5dgrnzv",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",
    "bc1gmk9yu",
]


@pytest.mark.parametrize(("address", "script"), VALID_SEGWIT)
def test_valid_segwit_addresses(address: str, script: str) -> None:
    network = "mainnet" if address.lower().startswith("bc1") else "testnet"
    raw = bytes.fromhex(script)
    assert address_to_script(address, network) == raw
    assert script_to_address(raw, network) == address.lower()
    hrp = network_params(network).hrp
    version, program = decode_segwit_address(hrp, address)
    assert encode_segwit_address(hrp, version, program) == address.lower()


@pytest.mark.parametrize("address", INVALID_SEGWIT)
def test_invalid_segwit_addresses(address: str) -> None:
    for hrp in ("bc", "tb"):
        with pytest.raises(AddressError):
            decode_segwit_address(hrp, address)
    for network in ("mainnet", "testnet"):
        with pytest.raises(AddressError):
            address_to_script(address, network)


@pytest.mark.parametrize(("version", "length"), [(0, 21), (17, 32), (1, 1), (16, 41), (-1, 20)])
def test_invalid_segwit_encode(version: int, length: int) -> None:
    with pytest.raises(AddressError):
        encode_segwit_address("bc", version, bytes(length))


def test_segwit_address_for_other_network() -> None:
    with pytest.raises(AddressError):
        address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest")
    with pytest.raises(AddressError):
        address_to_script("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "mainnet")


_NETWORK = st.sampled_from(sorted(NETWORK_PARAMS))


@given(st.integers(0, 16), st.binary(min_size=2, max_size=40), _NETWORK)
def test_segwit_round_trip(version: int, program: bytes, network: str) -> None:
    if version == 0 and len(program) not in (20, 32):
        return
    hrp = network_params(network).hrp
    address = encode_segwit_address(hrp, version, program)
    assert decode_segwit_address(hrp, address) == (version, program)
    script = address_to_script(address, network)
    assert script_to_address(script, network) == address
    assert classify_script(script) is not ScriptType.UNKNOWN


@given(st.binary(min_size=20, max_size=20), st.booleans(), _NETWORK)
def test_base58_script_round_trip(hash160: bytes, p2sh: bool, network: str) -> None:
    script = b"\xa9\x14" + hash160 + b"\x87" if p2sh else b"\x76\xa9\x14" + hash160 + b"\x88\xac"
    address = script_to_address(script, network)
    assert address is not None
    assert address_to_script(address, network) == script


@given(st.binary(max_size=100))
def test_classify_never_raises(script: bytes) -> None:
    kind = classify_script(script)
    address = script_to_address(script)
    if address is not None:
        assert address_to_script(address) == script
    else:
        assert kind in (
            ScriptType.P2PK,
            ScriptType.MULTISIG,
            ScriptType.OP_RETURN,
            ScriptType.UNKNOWN,
        )
