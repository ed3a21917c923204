"""Pairing window and whitelist."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from appliance.pairing.store import Whitelist
from appliance.pairing.window import PairingWindow


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
