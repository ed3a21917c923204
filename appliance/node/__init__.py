"""How every service talks to bitcoind: JSON-RPC (:mod:`.rpc`) and ZMQ (:mod:`.zmq_sub`)."""

from .rpc import (
    RPC_IN_WARMUP,
    BitcoinRPC,
    NodeAuthError,
    NodeError,
    NodeUnavailable,
    NodeWarmingUp,
    RPCError,
)
from .zmq_sub import (
    DEFAULT_HWM,
    TOPICS,
    Notification,
    SequenceEvent,
    SequenceLabel,
    SubscriberStats,
    ZMQSubscriber,
    parse_sequence,
)

__all__ = [
    "DEFAULT_HWM",
    "RPC_IN_WARMUP",
    "TOPICS",
    "BitcoinRPC",
    "NodeAuthError",
    "NodeError",
    "NodeUnavailable",
    "NodeWarmingUp",
    "Notification",
    "RPCError",
    "SequenceEvent",
    "SequenceLabel",
    "SubscriberStats",
    "ZMQSubscriber",
    "parse_sequence",
]
