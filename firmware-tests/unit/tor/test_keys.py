"""The onion service key derived from hsm_secret, its files and its address."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.tor.keys import (
    PUBLIC_HEADER,
    SECRET_HEADER,
    OnionKeyError,
    derive_onion_key,
    onion_address,
    pubkey_of_address,
    write_service_dir,
)

#: docs/identity.md's vector: hsm_secret = bytes 00..1f.
SECRET = bytes(range(32))
ADDRESS = "5wj6iy5d5dx3nq2hqjx5qyg5u2tebjrywxixfyce6z2yko2bptkguuqd.onion"
PUBLIC = "ed93e463a3e8efb6c347826fd860dda6a640a638b5d172e044f675853b417cd4"
EXPANDED_START = "c873bf9dba95cf92ee3aac4581f9474cd54c4c98e8bde547298de8c961058248"


def test_derivation_matches_the_documented_vector() -> None:
    key = derive_onion_key(SECRET)
    assert key.public.hex() == PUBLIC
    assert key.expanded[:32].hex() == EXPANDED_START
    assert key.address == ADDRESS
    doc = (Path(__file__).parents[3] / "docs" / "identity.md").read_text()
    assert ADDRESS in doc and PUBLIC in doc


def test_expanded_key_is_clamped_and_the_repr_hides_it() -> None:
    key = derive_onion_key(SECRET)
    assert key.expanded[0] & 7 == 0 and key.expanded[31] & 0xC0 == 0x40
    assert key.expanded.hex() not in repr(key) and ADDRESS in repr(key)


def test_another_secret_gives_another_address() -> None:
    assert derive_onion_key(bytes(32)).address != ADDRESS


def test_address_encoding_matches_tors_own_test_vector() -> None:
    # tor's src/test/hs_build_address.py: the RFC 8032 test key 1 as an onion service.
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert onion_address(pub) == "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion"
    assert pubkey_of_address("25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion") == pub


@pytest.mark.parametrize("bad", ["", "hearth.local", ADDRESS.replace("5wj", "5wk"),
                                 ADDRESS[:-7] + "x.onion", "0" * 56 + ".onion"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(OnionKeyError):
        pubkey_of_address(bad)


def test_service_dir_files_are_private_and_in_tors_format(tmp_path: Path) -> None:
    key = derive_onion_key(SECRET)
    d = tmp_path / "onion"
    write_service_dir(d, key)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    secret = (d / "hs_ed25519_secret_key").read_bytes()
    assert secret == SECRET_HEADER + key.expanded and len(secret) == 96
    assert (d / "hs_ed25519_public_key").read_bytes() == PUBLIC_HEADER + key.public
    assert (d / "hostname").read_text() == ADDRESS + "\n"
    for f in d.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # A restored secret replaces whatever key was there.
    write_service_dir(d, derive_onion_key(bytes(32)))
    assert (d / "hostname").read_text() != ADDRESS + "\n"
