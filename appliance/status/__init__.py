"""The status bus: every service publishes its state; the display and ``appliance status`` listen.

One ZMQ PUB socket per service at ``ipc://<run_dir>/status/<service>.sock``, one small
versioned JSON schema (:mod:`.schema`), full snapshots, heartbeats, and staleness on
the listening side. See ``docs/status-bus.md``.
"""

from __future__ import annotations

from .paths import status_dir, status_endpoint, status_socket_path
from .publisher import KEEP, PublisherStats, StatusPublisher
from .schema import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_RATE,
    DEFAULT_STALE_AFTER_S,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    Event,
    Phase,
    SchemaError,
    ServiceStatus,
    clip_text,
    decode_status,
    encode_status,
)
from .subscriber import (
    DEFAULT_RESCAN_S,
    ServiceState,
    StatusSubscriber,
    StatusTracker,
    StatusUpdate,
    describe_states,
    read_status_once,
)

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RATE",
    "DEFAULT_RESCAN_S",
    "DEFAULT_STALE_AFTER_S",
    "KEEP",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "Event",
    "Phase",
    "PublisherStats",
    "SchemaError",
    "ServiceState",
    "ServiceStatus",
    "StatusPublisher",
    "StatusSubscriber",
    "StatusTracker",
    "StatusUpdate",
    "clip_text",
    "decode_status",
    "describe_states",
    "encode_status",
    "read_status_once",
    "status_dir",
    "status_endpoint",
    "status_socket_path",
]
