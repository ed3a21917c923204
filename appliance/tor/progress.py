"""Reading tor's bootstrap progress from its notice log (pure code, no I/O).

tor logs ``Bootstrapped N% (tag): summary`` each time it gets further (control-spec
"Bootstrap phases"); 100% means it has circuits, so the onion service is published.
The log needs no control port and no cookie, and it is what the operator reads too.
"""

from __future__ import annotations

import re

__all__ = ["parse_bootstrap"]

_BOOTSTRAPPED = re.compile(r"\bBootstrapped (\d{1,3})%")


def parse_bootstrap(line: str) -> int | None:
    """The percentage in a ``Bootstrapped N%`` log line, else None."""
    match = _BOOTSTRAPPED.search(line)
    if match is None:
        return None
    percent = int(match.group(1))
    return percent if percent <= 100 else None
