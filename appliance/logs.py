"""One log format for every service, written to stdout for supervisord to rotate.

Format: ``2026-11-23T18:30:31.123Z INFO  indexer.block: message``. UTC, one line per
record, service name first so a merged view still reads. Never pass a secret to a
log call: the format has no redaction, by design there is nothing to redact.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["LOG_FORMAT", "setup_logging"]

LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _UTCFormatter(logging.Formatter):
    def converter(self, secs: float | None) -> time.struct_time:
        return time.gmtime(secs)


def setup_logging(service: str, level: str = "info") -> logging.Logger:
    """Configure the root logger for one process and return the service's logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_UTCFormatter(LOG_FORMAT, _DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return logging.getLogger(service)
