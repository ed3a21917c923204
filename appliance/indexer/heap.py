"""Keep the cyclic garbage collector off the index's long-lived objects.

A wallet of 10,000 scripts is ~100,000 long-lived objects (scripts, refs, hashes,
unspent outputs). CPython's full collection walks every tracked object, in one step,
on the event loop: tens of ms here, more on a Pi, each time the heap grows by a
quarter (as it does while a wallet goes live). ``gc.freeze()`` moves what exists into
a generation the collector never scans; reference counting still frees them. Called
after the start-up sync and after each go-live, when the objects just built stay.
The cost: a reference cycle alive at that moment and dropped later is never
reclaimed (the index builds none on purpose; a few stray ones are bytes).
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> None:
    """What exists now is long-lived: exclude it from future collections."""
    gc.freeze()
