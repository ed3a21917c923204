"""A user's hearth.toml from the boot partition, merged over the image's own, key by key.

Why: the image's ``/etc/hearth/hearth.toml`` carries settings the box needs (``auto_size
= true``: bitcoind sized to the card and the RAM) and documents every key. A user who
drops a file to pick the network must not switch those off by replacing the whole file.
So each key the user set replaces that key's line in the image's file (or is added to
its section); every key the user did not set keeps the image's value and comments.

Both files are checked with the configuration's own loader before anything is written;
a refused file changes nothing (the caller leaves it where the user put it).
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config, toml_value
from ..durability import write_atomic

__all__ = ["MergeError", "merge_config_files", "merge_toml", "toml_value"]

_SECTION = re.compile(r"^\s*\[([A-Za-z0-9_]+)\]\s*(#.*)?$")


class MergeError(ValueError):
    """The user's file cannot be taken; the message says why, naming the key."""


def _toml_value(value: Any) -> str:
    try:
        return toml_value(value)
    except ConfigError as exc:
        raise MergeError(str(exc)) from None


def _key_line(key: str) -> re.Pattern[str]:
    # `key = ...` or the image's commented default `#key = ...` (one per key).
    return re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")


def merge_toml(image_text: str, user_text: str) -> str:
    """The image's file with every key of ``user_text`` set; comments are kept.

    Raises ``MergeError`` when either text is not TOML or the user's file holds
    something other than ``[section]`` tables of scalars.
    """
    try:
        image = tomllib.loads(image_text)
    except tomllib.TOMLDecodeError as exc:
        raise MergeError(f"the image's hearth.toml is not valid TOML: {exc}") from None
    try:
        user = tomllib.loads(user_text)
    except tomllib.TOMLDecodeError as exc:
        raise MergeError(f"not valid TOML: {exc}") from None
    lines = image_text.splitlines()
    for section, table in user.items():
        if not isinstance(table, dict):
            raise MergeError(f"{section}: must be a table ([{section}])")
        start = next((i for i, ln in enumerate(lines)
                      if (m := _SECTION.match(ln)) and m.group(1) == section), None)
        if start is None:
            lines += ["", f"[{section}]"]
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])),
                   len(lines))
        for key, value in table.items():
            if isinstance(value, dict | list):
                raise MergeError(f"{section}.{key}: expected a single value, got {value!r}")
            line = f"{key} = {_toml_value(value)}"
            pattern = _key_line(key)
            # The image's set value wins the search over its commented default.
            hits = [i for i in range(start + 1, end) if pattern.match(lines[i])]
            live = [i for i in hits if not lines[i].lstrip().startswith("#")]
            if live or hits:
                lines[(live or hits)[0]] = line
                for extra in live[1:]:
                    lines[extra] = "#" + lines[extra]
            else:
                # After the section's last non-blank line, so it stays in its section.
                at = end
                while at > start + 1 and not lines[at - 1].strip():
                    at -= 1
                lines.insert(at, line)
                end += 1
    merged = "\n".join(lines) + "\n"
    expected = {s: dict(t) for s, t in image.items()}
    for section, table in user.items():
        expected.setdefault(section, {}).update(table)
    if tomllib.loads(merged) != expected:  # a line the edit above could not place
        raise MergeError("could not merge it over the image's file (a key repeated?)")
    return merged


def merge_config_files(user: Path, target: Path) -> str:
    """Merge ``user`` over ``target`` in place, after checking both with the loader.

    ``target`` is replaced atomically with its mode kept; ``user`` is not touched.
    Returns a one-line summary of the keys taken. Raises ``MergeError``.
    """
    try:
        load_config(user, env={})
    except ConfigError as exc:
        raise MergeError(str(exc)) from None
    merged = merge_toml(target.read_text(), user.read_text())
    with tempfile.TemporaryDirectory(dir=target.parent) as check_dir:
        check = Path(check_dir) / target.name  # the loader reads files: check a copy first
        check.write_text(merged)
        try:
            load_config(check, env={})
        except ConfigError as exc:
            raise MergeError(f"merged with the image's settings: {exc}") from None
    write_atomic(target, merged.encode(), target.stat().st_mode & 0o7777)
    keys = [f"{s}.{k}" for s, t in tomllib.loads(user.read_text()).items() for k in t]
    return f"{len(keys)} setting(s) taken: {', '.join(keys) or 'none'}"
