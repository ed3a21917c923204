"""The udev rule in rootfs-overlay and the agent agree on the tag; the rule is well formed."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.usb.service import UDEV_TAG

RULE = (Path(__file__).resolve().parents[3] / "rootfs-overlay" / "etc" / "udev" / "rules.d"
        / "90-hearth-usb.rules")
# udev's grammar: KEY[{attr}] OP "value", separated by commas (udev(7)).
_PAIR = re.compile(r'\s*([A-Z_]+)(\{[A-Za-z0-9_]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*')
_MATCH_KEYS = {"ACTION", "SUBSYSTEM", "ENV", "KERNEL", "DEVTYPE"}
_ASSIGN_KEYS = {"TAG", "ENV"}


def _rules() -> list[list[tuple[str, str, str, str]]]:
    rules = []
    for line in RULE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = []
        for part in line.split(","):
            m = _PAIR.fullmatch(part)
            assert m, f"not udev syntax: {part!r}"
            pairs.append((m[1], m[2] or "", m[3], m[4]))
        rules.append(pairs)
    return rules


def test_rule_tags_usb_block_devices_with_the_agents_tag() -> None:
    [rule] = _rules()
    matches = {(k, a): v for k, a, op, v in rule if op == "=="}
    assigns = [(k, op, v) for k, _, op, v in rule if op != "=="]
    assert all(k in _MATCH_KEYS for k, _ in matches)
    assert all(k in _ASSIGN_KEYS for k, _, _ in assigns)
    assert matches[("SUBSYSTEM", "")] == "block"
    assert matches[("ENV", "{ID_BUS}")] == "usb"
    assert "add" in matches[("ACTION", "")].split("|") and "remove" in matches[("ACTION", "")].split("|")
    assert ("TAG", "+=", UDEV_TAG) in assigns
