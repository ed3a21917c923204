"""Supervision: supervisord's PROCESS_STATE events on the status bus, and flood control.

:mod:`.protocol` parses the event listener protocol (pure), :mod:`.tracker` keeps the
programs' states and decides on stops (pure), :mod:`.rpc` reaches supervisord's XML-RPC,
:mod:`.service` is the process (the listener) that
supervisord runs (``python -m appliance.supervision.service``). The service module is
not imported here, so ``python -m`` does not find it already loaded.
"""

from __future__ import annotations

from .protocol import (
    ACK,
    READY,
    EventReader,
    ProcessStateEvent,
    ProtocolError,
    RawEvent,
    parse_process_state,
)
from .tracker import (
    DEFAULT_FLOOD_RESTARTS,
    DEFAULT_FLOOD_WINDOW_S,
    Summary,
    SupervisionTracker,
)

__all__ = [
    "ACK",
    "DEFAULT_FLOOD_RESTARTS",
    "DEFAULT_FLOOD_WINDOW_S",
    "READY",
    "EventReader",
    "ProcessStateEvent",
    "ProtocolError",
    "RawEvent",
    "Summary",
    "SupervisionTracker",
    "parse_process_state",
]
