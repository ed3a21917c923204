"""The cost of a JSON document, bounded before it is parsed. Pure, no I/O.

``json.loads`` of a 1 MB line ``[1,1,1,...]`` builds half a million objects, and a
5,000-deep ``[[[[...`` recurses until ``RecursionError``. :func:`json_cost_error` rejects
both from the raw bytes at C speed: it counts the commas and opening brackets, which
bound the number of values and the nesting depth from above. Only when a count is over
its limit does it look closer (strings removed, so a comma inside a string does not
count; the depth walked over the brackets alone).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_DEPTH", "DEFAULT_MAX_VALUES", "json_cost_error"]

#: Electrum's deepest request is 3 levels; TEOS bodies 2.
DEFAULT_MAX_DEPTH = 32
#: A batch of 5,000 requests of ~10 values each.
DEFAULT_MAX_VALUES = 50_000

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def json_cost_error(data: bytes, *, max_values: int = DEFAULT_MAX_VALUES,
                    max_depth: int = DEFAULT_MAX_DEPTH) -> str | None:
    """None if ``data`` (whatever it is) can be parsed within the limits, else why not."""
    opens = data.count(b"[") + data.count(b"{")
    commas = data.count(b",")
    if opens <= max_depth and commas < max_values:
        return None  # the common case: two C-speed counts
    structure = _STRING.sub(b'""', data)
    commas = structure.count(b",")
    if commas >= max_values:
        return f"more than {max_values:,d} values"
    brackets = _NOT_BRACKET.sub(b"", structure)
    opens = brackets.count(b"[") + brackets.count(b"{")
    if opens >= max_values:
        return f"more than {max_values:,d} values"  # every container is a value
    if opens <= max_depth:
        return None
    depth = deepest = 0
    for byte in brackets:  # at most 2 x max_values brackets here
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return f"nested deeper than {max_depth} levels"
        else:
            depth -= 1
    return None
