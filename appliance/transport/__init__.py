"""Hearth's authenticated channel to paired phones and desktops: BOLT #8 (Noise_XK) transport.

``noise`` is the protocol without I/O; ``stream`` runs it over asyncio streams; ``keys``
keeps the box's static key on disk.
"""

from __future__ import annotations

__all__: list[str] = []
