"""The setup page's pure parts: sessions and CSRF, the redemption limit, birthdays,
the HTML (escaping, no script) and the words for wallet errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

from appliance.setup.app import human_wallet_error
from appliance.setup.birthday import SLACK_S, height_for_date
from appliance.setup.sessions import RedeemLimiter, cookie_header, new_session, parse_cookie
from appliance.setup.views import (
    BoxView,
    ConnectView,
    DeviceView,
    HomeModel,
    WalletView,
    home_page,
    wallet_page,
)


def test_session_cookie_round_trip_and_csrf() -> None:
    s = new_session()
    again = parse_cookie(s.cookie_value)
    assert again is not None and again.key_hash == s.key_hash and again.csrf == s.csrf
    assert s.csrf_ok(s.csrf) and not s.csrf_ok("") and not s.csrf_ok(new_session().csrf)
    assert s.cookie_value not in repr(s)
    header = cookie_header(s)
    assert all(p in header for p in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"))
    for bad in (None, "", "x", s.cookie_value[:-1], s.cookie_value + "A", "!" * 43):
        assert parse_cookie(bad) is None


def test_redeem_limiter_blocks_after_the_limit_until_failures_age_out() -> None:
    now = [0.0]
    lim = RedeemLimiter(limit=3, period=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert not lim.blocked()
        lim.failed()
    assert lim.blocked()
    now[0] = 59.0
    assert lim.blocked()
    now[0] = 60.0
    assert not lim.blocked()


def test_birthday_is_the_first_block_a_day_before_the_date() -> None:
    day = dt.date(2024, 1, 10)
    midnight = int(dt.datetime(2024, 1, 10, tzinfo=dt.UTC).timestamp())
    times = [midnight - 5 * 86400 + h * 3600 for h in range(200)]  # hourly blocks

    async def median(height: int) -> int:
        return times[height]

    height = asyncio.run(height_for_date(day, len(times) - 1, median))
    assert times[height] >= midnight - SLACK_S > times[height - 1]
    assert asyncio.run(height_for_date(dt.date(2030, 1, 1), len(times) - 1, median)) == 200
    assert asyncio.run(height_for_date(dt.date(2000, 1, 1), len(times) - 1, median)) == 0


def _model(label: str) -> HomeModel:
    return HomeModel(
        csrf="c" * 32,
        box=BoxView("regtest", ["node  ready"], "Node synced", None, False),
        wallets=[WalletView("ab" * 8, label, "live", None, None, None, 2)],
        devices=[DeviceView("ff" * 32, label, "web", False, True)],
        connect=ConnectView("10.0.0.2:50002:s", "AB:CD", "http://hearth:pw@10.0.0.2:9814"),
        form_error=label, form_values={"key": label})


def test_pages_escape_everything_and_carry_no_script() -> None:
    evil = '<script>alert(1)</script>"'
    page = home_page(_model(evil))
    assert evil not in page and "&lt;script&gt;" in page
    assert "<script" not in page.lower()
    # Every form posts with the CSRF token.
    forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", page, flags=re.S)
    assert forms and all('name="csrf" value="' + "c" * 32 in f for f in forms)
    assert "10.0.0.2:50002:s" in page and "<svg" in page  # the server string and its QR
    for wallet in ("Electrum", "BlueWallet", "Sparrow", "Nunchuk"):
        assert f"<summary>{wallet}</summary>" in page


def test_wallet_page_refreshes_until_ready() -> None:
    connect = ConnectView("h:1:s", "AB", None)
    coming = wallet_page(WalletView("ab", "w", "backfilling", 42.0, 90.0, None, 2), connect)
    assert 'http-equiv="refresh"' in coming and "42%" in coming and "1 min 30 s" in coming
    ready = wallet_page(WalletView("ab", "w", "live", None, None, None, 2), connect)
    assert "refresh" not in ready and "Ready" in ready and "h:1:s" in ready


def test_wallet_errors_in_words() -> None:
    assert "private key" in human_wallet_error(
        "that is a private key: Hearth only takes public keys")
    assert "another network" in human_wallet_error(
        "extended key is for mainnet but the box runs regtest")
    assert "xpub" in human_wallet_error("invalid descriptor: 'x' is not a valid descriptor")
    assert human_wallet_error("something new") == "something new"
