"""What a wallet QR says -> the add form's key field, or a refusal in words that never
repeats the QR's content."""

from __future__ import annotations

import json

import pytest

from appliance.setup import walletqr
from appliance.setup.walletqr import ScanRefused, wallet_from_qr_texts

VPUB = ("vpub5Xzfrm6ouSBPEvS1a3ZWBePKFrvz2XEJC82RaNGNvCrcm4t7xL3Tfad4aDNuzs1wPnuSJm7n973r5"
        "xyXXpyVdowWfyor2od9C5kMDfifEZH")
TPUB = ("tpubDC2pzLGKv5DoDK16gx7qojugvvKXu9iMZyfAVi7J28NGcZBHXsDg49cArfNsXBH1zyfxRHpmbXazY"
        "ihGN5em7im1UFwzt9vMKVU3ktyVkHx")
ZPUB = ("zpub6qKj5RnUWAMJe7CUuUi11zmKwjWmo1CHra7JhwqvSEN8yU92xxhi9qFcf3DFzVdd2MNfJfW1ykU3d"
        "7RnQcdYpkfv9LbYNSu6GyzvmzJRMcM")
VPRV = ("vprv9K1KTFZv54d62SMYU22VpWSahq6Vd4WSpu6pmyrmMsKdtGYyQnjD7nJaj2EdugsLz4TSQJzrUMJPU"
        "XRjeAUwsxMM9yVUBUp6GDs7TcM9QQZ")
DESC = f"wpkh([d34db33f/84h/1h/0h]{TPUB}/0/*)#abcdefgh"
SEED = ("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
        "abandon about")


def key(*texts: str) -> str:
    return wallet_from_qr_texts(list(texts)).key


def test_keys_and_descriptors_pass_as_they_are() -> None:
    assert key(VPUB) == VPUB
    assert key(f"  {ZPUB}\n") == ZPUB
    assert key(DESC) == DESC
    # A descriptor file's text: comments skipped, receive and change kept.
    change = DESC.replace("/0/*", "/1/*").split("#")[0]
    assert key(f"# Sparrow wallet\n{DESC.split('#')[0]}\n{change}\n") == \
        f"{DESC.split('#')[0]}\n{change}"


def test_a_key_with_its_origin_becomes_the_descriptor_its_path_says() -> None:
    assert key(f"[D34DB33F/84'/1'/0']{TPUB}") == f"wpkh([d34db33f/84h/1h/0h]{TPUB}/0/*)"
    assert key(f"[d34db33f/49h/1h/0h]{TPUB}") == f"sh(wpkh([d34db33f/49h/1h/0h]{TPUB}/0/*))"
    assert key(f"[d34db33f/86h/1h/0h]{TPUB}") == f"tr([d34db33f/86h/1h/0h]{TPUB}/0/*)"
    assert key(f"[d34db33f/44h/1h/0h]{TPUB}") == f"pkh([d34db33f/44h/1h/0h]{TPUB}/0/*)"
    assert key(f"[d34db33f/0h]{TPUB}") == TPUB  # no known purpose: the key alone
    with pytest.raises(ScanRefused, match="multisig"):
        key(f"[d34db33f/48h/1h/0h/2h]{TPUB}")


def test_json_exports() -> None:
    specter = json.dumps({"label": "Savings", "blockheight": 800000, "descriptor": DESC})
    found = wallet_from_qr_texts([specter])
    assert (found.key, found.label) == (DESC, "Savings")
    assert key(json.dumps({"ExtPubKey": ZPUB, "MasterFingerprint": "d34db33f"})) == ZPUB
    with pytest.raises(ScanRefused, match="does not hold a wallet key"):
        key(json.dumps({"name": "x"}))
    with pytest.raises(ScanRefused, match="private key"):
        key(json.dumps({"descriptor": f"wpkh({VPRV}/0/*)"}))


@pytest.mark.parametrize("text, words", [
    ("bitcoin:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080?amount=1", "That is an address"),
    ("BITCOIN:BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "That is an address"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "That is an address"),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "That is an address"),
    ("addr(bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080)", "That is an address"),
    (VPRV, "holds a private key"),
    (f"wpkh([d34db33f/84h/1h/0h]{VPRV}/0/*)", "holds a private key"),
    ("cVt4o7BGAig1UXywgGSmARhxMdzP5qvQsxKkSsc1XEkw3tDTQFpy", "holds a private key"),
    (SEED, "recovery phrase"),
    ("0" * 48, "recovery phrase"),
    ("ur:crypto-account/oeadcyemrewytyaolttaadmetaaddloxaxhdclaxwmfmdeiamecsdsemgtvsjzcnc",
     "UR"),
    ("https://example.org/", "does not hold a wallet key"),
    ("   ", "does not hold a wallet key"),
])
def test_refusals_are_in_words_and_never_echo_the_code(text: str, words: str) -> None:
    with pytest.raises(ScanRefused, match=words) as refused:
        key(text)
    assert text.strip()[:20] not in str(refused.value) or not text.strip()


def test_several_codes_in_one_photo() -> None:
    found = wallet_from_qr_texts(["https://example.org/", VPUB])
    assert found.key == VPUB and "2 QR codes" in found.note
    with pytest.raises(ScanRefused, match="2 different wallet QR codes"):
        key(VPUB, ZPUB)
    # A secret anywhere in the photo is what the refusal warns about.
    with pytest.raises(ScanRefused, match="private key"):
        key("bitcoin:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", VPRV)
    with pytest.raises(ScanRefused) as none:
        key()
    assert str(none.value) == walletqr.NO_QR
