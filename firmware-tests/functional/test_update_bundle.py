"""Bundles checked by the real ``rauc info``: real bundles made by ``rauc bundle`` with a
throwaway key, and the refusals the owner may meet (another key, a cut file, another
architecture, no rauc at all)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.update.bundle import (
    BadSignature,
    BundleError,
    CorruptBundle,
    RaucMissing,
    WrongCompatible,
    compare_versions,
    inspect,
    parse_version,
)
from functional.framework.rauc import COMPATIBLE, Key, have_rauc, make_bundle, two_keys

pytestmark = pytest.mark.skipif(not have_rauc(), reason="needs rauc, openssl and mksquashfs")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Key, Key]:
    return two_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Key, Key]) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "hearth-0.1.1-arm64.raucb", keys[0],
                       version="0.1.1")


@pytest.mark.parametrize("fmt", ["plain", "verity"])
def test_a_signed_bundle_is_read(tmp_path: Path, keys: tuple[Key, Key], fmt: str) -> None:
    path = make_bundle(tmp_path / "b.raucb", keys[0], version="0.2.0", fmt=fmt)
    info = inspect(path, keyring=keys[0].cert, compatible=COMPATIBLE)
    assert (info.compatible, info.version, info.images) == (COMPATIBLE, "0.2.0", ("rootfs",))


def test_another_key_is_a_bad_signature(bundle: Path, keys: tuple[Key, Key]) -> None:
    with pytest.raises(BadSignature, match="Bad signature"):
        inspect(bundle, keyring=keys[1].cert, compatible=COMPATIBLE)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_bundle_is_refused(tmp_path: Path, bundle: Path, keys: tuple[Key, Key],
                                       keep: float) -> None:
    data = bundle.read_bytes()
    cut = tmp_path / bundle.name
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CorruptBundle, match="truncated or damaged"):
        inspect(cut, keyring=keys[0].cert, compatible=COMPATIBLE)


def test_a_flipped_byte_in_a_plain_bundle_breaks_its_signature(tmp_path: Path, bundle: Path,
                                                               keys: tuple[Key, Key]) -> None:
    data = bytearray(bundle.read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / bundle.name
    bad.write_bytes(bytes(data))
    with pytest.raises(BadSignature):
        inspect(bad, keyring=keys[0].cert, compatible=COMPATIBLE)


def test_not_a_bundle_at_all(tmp_path: Path, keys: tuple[Key, Key]) -> None:
    junk = tmp_path / "x.raucb"
    junk.write_bytes(b"not a bundle\n" * 100)
    with pytest.raises(CorruptBundle):
        inspect(junk, keyring=keys[0].cert, compatible=COMPATIBLE)
    with pytest.raises(CorruptBundle, match="No bundle"):
        inspect(tmp_path / "missing.raucb", keyring=keys[0].cert, compatible=COMPATIBLE)


def test_another_architecture_is_refused(tmp_path: Path, keys: tuple[Key, Key]) -> None:
    armhf = make_bundle(tmp_path / "armhf.raucb", keys[0], version="0.1.1", compatible="hearth-armhf")
    with pytest.raises(WrongCompatible, match="hearth-armhf") as caught:
        inspect(armhf, keyring=keys[0].cert, compatible=COMPATIBLE)
    assert (caught.value.found, caught.value.expected) == ("hearth-armhf", COMPATIBLE)


def test_an_unreadable_version_is_refused(tmp_path: Path, keys: tuple[Key, Key]) -> None:
    odd = make_bundle(tmp_path / "odd.raucb", keys[0], version="0.1.1-beta")
    with pytest.raises(CorruptBundle, match="not like 0.1.1"):
        inspect(odd, keyring=keys[0].cert, compatible=COMPATIBLE)


def test_missing_rauc_and_missing_keyring(bundle: Path, keys: tuple[Key, Key], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RaucMissing):
        inspect(bundle, keyring=keys[0].cert, compatible=COMPATIBLE, rauc=str(tmp_path / "no-rauc"))
    monkeypatch.setenv("PATH", str(tmp_path))  # the default name, not found on PATH
    with pytest.raises(RaucMissing):
        inspect(bundle, keyring=keys[0].cert, compatible=COMPATIBLE)
    monkeypatch.setenv("PATH", os.defpath)
    # rauc without a keyring skips the signature check: never asked to
    with pytest.raises(BundleError, match="keyring"):
        inspect(bundle, keyring=tmp_path / "none.pem", compatible=COMPATIBLE)


def test_versions() -> None:
    assert parse_version("0.1.10") == (0, 1, 10)
    assert compare_versions("0.1.1", "0.1.0") == 1
    assert compare_versions("0.1.9", "0.1.10") == -1
    assert compare_versions("0.1", "0.1.0") == 0
    assert compare_versions("1.0.0", "0.99.99") == 1
    for bad in ("", "0.1.1rc1", "v0.1", "0..1", "0.1."):
        with pytest.raises(ValueError):
            parse_version(bad)
