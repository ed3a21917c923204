"""Give freed heap memory back to the system (glibc ``malloc_trim``); a no-op elsewhere.

Python frees a 1 MB request line as soon as it is parsed, but glibc keeps the pages
for reuse, so a burst of large requests would leave the process's resident size at its
peak for good. ``malloc_trim(0)`` returns the free pages (measured in
``docs/performance.md``, hostile-load bench). It walks the heap, so callers run it only
after a burst has gone, at most once a second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["trim"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        func: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return func


def trim() -> bool:
    """Release free heap pages; False when the C library cannot."""
    func = _malloc_trim()
    if func is None:
        return False
    func(0)
    return True
