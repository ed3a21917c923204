"""Hearth's authenticated channel to paired phones and desktops: BOLT #8 (Noise_XK) transport.

``noise`` is the protocol without I/O; ``stream`` runs it over asyncio streams. The box's
static key derives from ``hsm_secret`` (``appliance.identity``).
"""

from __future__ import annotations

__all__: list[str] = []
