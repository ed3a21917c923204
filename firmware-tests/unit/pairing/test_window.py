"""Pairing window (Noise and setup-page tokens) and the whitelist of paired devices."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from appliance.pairing.store import KIND_NOISE, KIND_WEB, PairedKeys, Whitelist
from appliance.pairing.window import PairingWindow, decode_web_token, encode_web_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_token_is_single_use_and_expires() -> None:
    clock = Clock()
    w = PairingWindow(clock)
    assert not w.is_open and not w.redeem(w.token)
    w.open(300)
    token = w.token
    assert w.is_open and 299 < (w.seconds_left() or 0) <= 300
    assert not w.redeem(b"\0" * 8) and w.is_open
    assert w.redeem(token) and not w.is_open
    assert not w.redeem(token)
    w.open(300)
    clock.now += 301
    assert not w.is_open and not w.redeem(w.token)


def test_window_until_first_pairing_and_rotation() -> None:
    w = PairingWindow(Clock())
    w.open(None)
    first = w.token
    assert w.is_open and w.seconds_left() is None
    w.open(None)
    assert w.token != first


def test_whitelist_persists_0600_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "pairing" / "clients.json"
    wl = Whitelist(path)
    a, b = b"\x02" + bytes(32), b"\x03" + bytes(32)
    wl.add(a, "phone")
    wl.add(b, "laptop" * 20)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Whitelist(path)
    assert a in again and b in again and len(again.clients[b].label) == 64
    assert again.revoke(a) and not again.revoke(a)
    assert sorted(again.reset()) == [b]
    assert json.loads(path.read_text()) == [] and Whitelist(path).clients == {}


def test_web_token_is_single_use_separate_and_closes_the_window() -> None:
    clock = Clock()
    w = PairingWindow(clock)
    assert not w.redeem_web(w.web_token)  # closed
    w.open(300)
    web, noise = w.web_token, w.token
    assert web != noise and not w.redeem_web(noise)  # one kind's token is not the other's
    assert w.redeem_web(web) and not w.is_open
    assert not w.redeem_web(web) and not w.redeem(noise)  # one press, one pairing
    w.open(300)
    old = w.web_token
    w.open(300)  # a new press: the old link is dead
    assert not w.redeem_web(old)
    clock.now += 301
    assert not w.redeem_web(w.web_token)  # expired


def test_web_token_text_is_qr_alphanumeric_and_round_trips() -> None:
    w = PairingWindow()
    text = encode_web_token(w.web_token)
    assert len(text) == 13 and text == text.upper() and text.isalnum()
    assert decode_web_token(text) == w.web_token == decode_web_token(text.lower())
    for bad in ("", "A" * 12, "A" * 14, "1" * 13, "../../etc/pas"):
        assert decode_web_token(bad) is None


def test_browser_sessions_are_listed_with_keys_but_only_noise_keys_open_noise(
        tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    wl = Whitelist(path)
    noise, web = b"\x02" + bytes(32), bytes(range(32))
    wl.add(noise, "laptop")
    wl.add(web, "browser on Android", KIND_WEB)
    assert PairedKeys(path).current() == {noise}
    assert PairedKeys(path, KIND_WEB).current() == {web}
    assert {c.kind for c in Whitelist(path).clients.values()} == {KIND_NOISE, KIND_WEB}
    # A file from before the setup page (no "kind") is all Noise keys.
    path.write_text(json.dumps([{"pubkey": noise.hex(), "label": "old", "paired_at": 1.0}]))
    assert Whitelist(path).clients[noise].kind == KIND_NOISE
    assert PairedKeys(path, KIND_WEB).current() == frozenset()
