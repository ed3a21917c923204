"""Private keys are refused before a descriptor reaches bitcoind, by the key's version,
not by a substring: a public key whose base58 contains "prv" is a public key."""

from __future__ import annotations

import os

from appliance.chain.script import base58check_decode, base58check_encode
from appliance.indexer.wallets import has_extended_private_key

#: A real tpub from a functional test's random wallet, refused by the old substring test.
TPUB_WITH_PRV = ("tpubDC8RCY1jKiaE5o1yxGjgLKnJD7ZPbaK5wwggZJEtVt1fbm1jAfiQDprvwthPqLy3ptY7"
                 "VToajbRavDJzY8cSYosiZyrprR4i3BX7a3Dr4Pg")


def private_of(public: str, version: str) -> str:
    """The same key material under a private version (a well-formed 78-byte payload)."""
    return base58check_encode(bytes.fromhex(version) + base58check_decode(public)[4:])


def test_a_public_key_containing_prv_is_public() -> None:
    assert "prv" in TPUB_WITH_PRV
    desc = f"wpkh([0c9a3581/84h/1h/0h]{TPUB_WITH_PRV}/0/*)#dfmxn5g4"
    assert not has_extended_private_key(desc)


def test_extended_private_keys_are_found_anywhere() -> None:
    for version in ("04358394", "0488ade4", "045f18bc", "04b2430c"):  # tprv xprv vprv zprv
        prv = private_of(TPUB_WITH_PRV, version)
        assert prv[1:4] == "prv", prv
        assert has_extended_private_key(f"wpkh([0c9a3581/84h/1h/0h]{prv}/0/*)")
        assert has_extended_private_key(f"wsh(multi(2,{TPUB_WITH_PRV}/0/*,{prv}/0/*))")


def test_other_long_base58_is_not_a_private_key() -> None:
    noise = base58check_encode(os.urandom(78))
    assert not has_extended_private_key(f"wpkh({noise}/0/*)") or noise[1:4] == "prv"
