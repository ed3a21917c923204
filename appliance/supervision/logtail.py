"""The last error line of a program's log: what the OLED and ``appliance status`` show for a
program that keeps failing. Pure text in, one line out; the listener reads the log tail
through supervisord's XML-RPC (``tailProcessStdoutLog``).
"""

from __future__ import annotations

import re

__all__ = ["MAX_ERROR_CHARS", "last_error_line"]

MAX_ERROR_CHARS = 160

# In order of preference, each searched from the end of the tail:
_PATTERNS = (
    # a Python traceback's last line: "OSError: [Errno 28] No space left on device"
    re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Full|Failed)\b(?::.*)?$"),
    # bitcoind and most C programs: "Error: Disk space is too low!", "EXCEPTION: ..."
    re.compile(r"\b(?:error|fatal|exception|failed|cannot|can't)\b", re.IGNORECASE),
)
# "2026-12-04T11:00:00 ERROR tower: ..." -> drop a leading timestamp (and level) for room.
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?Z?\s+")


def last_error_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return None
    for pattern in _PATTERNS:
        for line in reversed(lines):
            if pattern.search(line) and not line.startswith(("Traceback", "File ")):
                return _clip(_STAMP.sub("", line))
    return _clip(_STAMP.sub("", lines[-1]))


def _clip(line: str) -> str:
    return line if len(line) <= MAX_ERROR_CHARS else line[:MAX_ERROR_CHARS - 3] + "..."
