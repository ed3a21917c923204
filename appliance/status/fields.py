"""The typed status fields that one service publishes and another reads.

Sender and receiver import the names and encodings from here, so the display never
parses a sentence meant for people (``detail`` stays free text for ``appliance status``)
and a renamed counter breaks at import time, not silently on the OLED. Counters are
numbers on the wire (:mod:`.schema`); ids ride in them as integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TypeVar

__all__ = ["BREACH_TXID_HEX_DIGITS", "LAST_BREACH_STOPPED", "LAST_BREACH_TS", "LAST_BREACH_TXID",
           "RESTORED_BOX", "TOR_BOOTSTRAP", "UPDATE_STATE", "USB_STATE", "UpdateState", "UsbState",
           "breach_txid", "restored_box", "tor_line", "txid_counter", "update_state", "usb_state"]


class UsbState(IntEnum):
    """What the USB service is doing with a stick (counter ``backup_state``)."""

    IDLE = 0
    RUNNING = 1
    OK = 2
    FAILED = 3


class UpdateState(IntEnum):
    """Where an update from a stick stands, or a rollback to tell (usb: ``update_state``)."""

    IDLE = 0
    CHECKING = 1  # copying and verifying the stick's bundle
    ASKING = 2  # "Update 0.1.0 -> 0.1.1? Press to install"
    INSTALLING = 3
    REBOOTING = 4
    REFUSED = 5  # the bundle was refused; nothing changed
    FAILED = 6  # rauc install failed; the running slot is untouched
    ROLLED_BACK = 7  # the last update did not come up healthy and was rolled back


#: usb: an :class:`UpdateState`; the words to show come from ``update.view`` (usb.ctl).
UPDATE_STATE = "update_state"
#: usb: a :class:`UsbState`.
USB_STATE = "backup_state"
#: usb: the box id (4 bytes as an integer) of the last restore from a stick, while shown.
RESTORED_BOX = "restored_box"
#: tower: when the latest breach was seen, and whether all its penalties confirmed.
LAST_BREACH_TS = "last_breach_ts"
LAST_BREACH_STOPPED = "last_breach_stopped"
#: tower: the latest breach's txid, its first 12 display-order hex digits as an integer
#: (48 bits: exact in any JSON reader's numbers).
LAST_BREACH_TXID = "last_breach_txid"
BREACH_TXID_HEX_DIGITS = 12
#: tor: its bootstrap percentage (100 = the onion service is reachable; -1 = tor is off).
TOR_BOOTSTRAP = "tor_bootstrap"


_S = TypeVar("_S", UsbState, UpdateState)


def _state(counters: Mapping[str, int | float], key: str, kind: type[_S]) -> _S | None:
    try:
        return kind(int(counters.get(key, 0)))
    except ValueError:
        return None  # a newer sender's state: show nothing rather than guess


def usb_state(counters: Mapping[str, int | float]) -> UsbState | None:
    return _state(counters, USB_STATE, UsbState)


def update_state(counters: Mapping[str, int | float]) -> UpdateState | None:
    return _state(counters, UPDATE_STATE, UpdateState)


def restored_box(counters: Mapping[str, int | float]) -> str | None:
    """The restored box's id as shown everywhere (8 hex digits), if one was restored."""
    value = counters.get(RESTORED_BOX)
    return None if value is None else f"{int(value):08x}"


def txid_counter(txid_hex: str) -> int:
    return int(txid_hex[:BREACH_TXID_HEX_DIGITS], 16)


def breach_txid(counters: Mapping[str, int | float]) -> str:
    """The start of the latest breach's txid (display hex), or "" when none is known."""
    value = counters.get(LAST_BREACH_TXID)
    return "" if value is None else f"{int(value):0{BREACH_TXID_HEX_DIGITS}x}"


def tor_line(counters: Mapping[str, int | float] | None) -> str:
    """The OLED's Tor line: "" when tor is off or silent, else its bootstrap or "ready"."""
    value = None if counters is None else counters.get(TOR_BOOTSTRAP)
    if value is None or value < 0:
        return ""
    return "Tor: ready" if value >= 100 else f"Tor: {int(value)}%"
