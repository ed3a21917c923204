"""appliance.identity: the root secret and the keys derived from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from coincurve import PrivateKey

from appliance.identity import (
    LABELS,
    IdentityError,
    derive_bytes,
    derive_secp256k1,
    load_hsm_secret,
    load_or_create_hsm_secret,
)


def test_secret_made_once_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "hsm_secret"
    old = os.umask(0)
    try:
        first = load_or_create_hsm_secret(path)
    finally:
        os.umask(old)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_hsm_secret(path) == first
    assert not list(path.parent.glob(".*tmp*"))


def test_bad_secret_files_are_refused_without_echoing_them(tmp_path: Path) -> None:
    path = tmp_path / "hsm_secret"
    path.write_bytes(b"short secret")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="corrupt") as info:
        load_hsm_secret(path)
    assert "short secret" not in str(info.value)
    path.write_bytes(bytes(32))
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_hsm_secret(path)
    with pytest.raises(IdentityError, match="no hsm_secret"):
        load_hsm_secret(tmp_path / "missing")


def test_derivations_are_deterministic_and_separated() -> None:
    secret = bytes(range(32))
    keys = {label: derive_bytes(secret, label) for label in LABELS}
    assert len(set(keys.values())) == len(LABELS)
    assert derive_bytes(secret, "noise-static") == keys["noise-static"]
    assert derive_bytes(bytes(32), "noise-static") != keys["noise-static"]
    with pytest.raises(ValueError):
        derive_bytes(secret, "nope")


@pytest.mark.parametrize("seed", range(20))
def test_secp256k1_keys_have_even_y_and_match(seed: int) -> None:
    key = derive_secp256k1(bytes([seed]) * 32, "noise-static")
    assert key.public[0] == 2 and len(key.public) == 33
    assert PrivateKey(key.secret).public_key.format() == key.public
    assert key.secret.hex() not in repr(key)
