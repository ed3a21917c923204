"""Every control-socket command and its reply, shared by the services (receivers) and
their callers (the CLI, the display, the button, the setup page, the USB agent).

A request class names its command (``cmd``) and, as its generic argument, its reply type;
see :mod:`appliance.control` for the wire form. Field order is the wire's key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from . import Message, Request

__all__ = [
    "Audit", "AuditReply", "Backfill", "BackupStatus", "BackupStatusReply", "Branch",
    "ElectrumPorts", "Export", "Exported", "IndexerStatus", "IndexerStatusReply",
    "PairedClientInfo", "PairingList", "PairingOpen", "PairingPayload", "PairingRedeemWeb",
    "PairingReset", "PairingRevoke", "PairingState", "Payload", "PhrasePress", "PhrasePressed",
    "PhraseWords", "PhraseWordsReply", "Redeemed", "Removed", "ResetDone", "Revoked", "TowerStatus",
    "TowerStatusReply", "TowerUrl", "TowerUrlReply", "UpdateView", "UpdateViewReply", "UsbBackup",
    "UsbBackupReply",
    "WalletAdd", "WalletAdded", "WalletList", "WalletRemove", "WalletSummary", "WindowOpen",
]

# --- indexer: wallets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Branch(Message):
    descriptor: str
    derived: int
    used: int


@dataclass(frozen=True)
class Backfill(Message):
    start: int
    end: int
    percent: float
    eta_s: int | None
    matched_blocks: int
    fetched_from_peer: int


@dataclass(frozen=True)
class WalletSummary(Message):
    id: str
    label: str
    state: str
    birthday: int | None
    gap: int
    change_gap: int
    branches: list[Branch]
    backfill: Backfill | None  # while not live
    jobs: list[dict[str, Any]]  # gap jobs: scripts asked for past the gap
    error: str | None


@dataclass(frozen=True)
class WalletAdded(Message):
    """On the wire the summary's fields follow ``new`` in one flat object."""

    new: bool
    wallet: WalletSummary

    def to_wire(self) -> dict[str, Any]:
        return {"new": self.new, **self.wallet.to_wire()}

    @classmethod
    def from_wire(cls, data: Any, where: str = "") -> Self:
        added = _Flag.from_wire(data, where)
        return cls(added.new, WalletSummary.from_wire(data, where))


@dataclass(frozen=True)
class _Flag(Message):
    new: bool


@dataclass(frozen=True)
class WalletAdd(Request[WalletAdded]):
    cmd: ClassVar[str] = "wallet.add"
    descriptors: list[str]
    birthday: int | None = None
    gap: int | None = None  # None: hearth.toml's
    change_gap: int | None = None
    label: str = ""


@dataclass(frozen=True)
class WalletList(Request[list[WalletSummary]]):
    cmd: ClassVar[str] = "wallet.list"


@dataclass(frozen=True)
class Removed(Message):
    removed: str


@dataclass(frozen=True)
class WalletRemove(Request[Removed]):
    cmd: ClassVar[str] = "wallet.remove"
    id: str = ""  # a unique prefix is enough


# --- indexer: status ----------------------------------------------------------------------


@dataclass(frozen=True)
class ElectrumPorts(Message):
    tcp: int | None
    tls: int | None


@dataclass(frozen=True)
class PairingState(Message):
    noise_port: int | None
    box_key: str
    window_open: bool
    window_seconds_left: float | None
    paired: int
    refused: int
    failed_handshakes: int
    connected: int


@dataclass(frozen=True)
class IndexerStatusReply(Message):
    height: int | None
    tip: str | None
    wallets: int
    scripts: int
    adhoc_scripts: int
    adhoc_catchups: int
    mempool_txs: int
    blocks_indexed: int
    reorgs: int
    resyncs: int
    last_block_ms: float
    electrum: dict[str, int]  # the Electrum server's counters and gauges
    electrum_ports: ElectrumPorts
    pairing: PairingState | None  # None: the Noise listener is off


@dataclass(frozen=True)
class IndexerStatus(Request[IndexerStatusReply]):
    cmd: ClassVar[str] = "status"


# --- indexer: pairing ---------------------------------------------------------------------


@dataclass(frozen=True)
class PairedClientInfo(Message):
    key: str
    label: str
    paired_at: float
    kind: str  # "noise" or "web"
    connected: int


@dataclass(frozen=True)
class PairingList(Request[list[PairedClientInfo]]):
    cmd: ClassVar[str] = "pairing.list"


@dataclass(frozen=True)
class Revoked(Message):
    revoked: str


@dataclass(frozen=True)
class PairingRevoke(Request[Revoked]):
    cmd: ClassVar[str] = "pairing.revoke"
    key: str = ""  # a unique prefix is enough


@dataclass(frozen=True)
class ResetDone(Message):
    revoked: int


@dataclass(frozen=True)
class PairingReset(Request[ResetDone]):
    cmd: ClassVar[str] = "pairing.reset"


@dataclass(frozen=True)
class WindowOpen(Message):
    window_seconds_left: float | None


@dataclass(frozen=True)
class PairingOpen(Request[WindowOpen]):
    cmd: ClassVar[str] = "pairing.open"


@dataclass(frozen=True)
class Payload(Message):
    payload: str | None  # None: the window is closed
    window_seconds_left: float | None = None
    setup_url: str | None = None  # the setup page's single-use link
    tls_server: str | None = None  # "host:port:s" for phone wallets without Noise
    tls_fingerprint: str | None = None


@dataclass(frozen=True)
class PairingPayload(Request[Payload]):
    """For the display only (the socket is the appliance user's): the QR text."""

    cmd: ClassVar[str] = "pairing.payload"


@dataclass(frozen=True)
class Redeemed(Message):
    paired: str


@dataclass(frozen=True)
class PairingRedeemWeb(Request[Redeemed]):
    """The setup page redeems its URL token (hex) for a browser session (hash, hex)."""

    cmd: ClassVar[str] = "pairing.redeem_web"
    token: str
    session_hash: str
    label: str = ""


# --- tower --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TowerStatusReply(Message):
    """On the wire the counters sit next to the other fields in one flat object."""

    height: int
    live: bool
    ports: dict[str, int]
    tip: str | None
    tower_id: str
    counters: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        counters = wire.pop("counters")
        return {**wire, **counters}

    @classmethod
    def from_wire(cls, data: Any, where: str = "") -> Self:
        head = super().from_wire(data, where)
        known = {"height", "live", "ports", "tip", "tower_id"}
        counters = _Counters.from_wire(
            {"counters": {k: v for k, v in data.items() if k not in known}}, where)
        return cls(head.height, head.live, head.ports, head.tip, head.tower_id,
                   counters.counters)


@dataclass(frozen=True)
class _Counters(Message):
    counters: dict[str, int]


@dataclass(frozen=True)
class TowerStatus(Request[TowerStatusReply]):
    cmd: ClassVar[str] = "status"


@dataclass(frozen=True)
class AuditReply(Message):
    counters: dict[str, int]
    stored: dict[str, int]
    writable: bool


@dataclass(frozen=True)
class Audit(Request[AuditReply]):
    """The counters next to a count of what is stored (a full scan: tests, the soak)."""

    cmd: ClassVar[str] = "audit"


@dataclass(frozen=True)
class TowerUrlReply(Message):
    url: str | None  # None: the HTTP port is off
    tower_id: str
    ports: dict[str, int]


@dataclass(frozen=True)
class TowerUrl(Request[TowerUrlReply]):
    """What to paste into Electrum's ``watchtower_url`` (it holds the password)."""

    cmd: ClassVar[str] = "url"


# --- backup -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported(Message):
    path: str
    streams: int


@dataclass(frozen=True)
class Export(Request[Exported]):
    """Write ``<data_dir>/backup/export.bin`` now (format in appliance/backup/export.py)."""

    cmd: ClassVar[str] = "export"


@dataclass(frozen=True)
class BackupStatusReply(Message):
    port: int | None
    streams: int
    bytes: int
    last_write: float | None
    connected: int
    clients: dict[str, int]  # owner -> bytes used
    quota: int
    counters: dict[str, int]


@dataclass(frozen=True)
class BackupStatus(Request[BackupStatusReply]):
    cmd: ClassVar[str] = "status"


# --- usb ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhraseWordsReply(Message):
    words: list[str]  # this screen's; none once acknowledged
    first: int  # 1-based number of the first word, -1 for none
    total: int
    last: bool = False  # the screen holds the last word


@dataclass(frozen=True)
class PhraseWords(Request[PhraseWordsReply]):
    cmd: ClassVar[str] = "phrase.words"


@dataclass(frozen=True)
class PhrasePressed(Message):
    consumed: bool  # False: no phrase to page through, the press is the button's
    acknowledged: bool = False


@dataclass(frozen=True)
class PhrasePress(Request[PhrasePressed]):
    """The button, offered to the usb service first (phrase screens, an update question)."""

    cmd: ClassVar[str] = "phrase.press"
    long: bool = False  # a long press: only an update question takes it (as "no")


@dataclass(frozen=True)
class UpdateViewReply(Message):
    state: int  # an appliance.status.fields.UpdateState
    headline: str = ""
    detail: str = ""
    percent: int = -1
    hint: str = ""


@dataclass(frozen=True)
class UpdateView(Request[UpdateViewReply]):
    """What the OLED shows about an update from a stick (or a rollback)."""

    cmd: ClassVar[str] = "update.view"


@dataclass(frozen=True)
class UsbBackupReply(Message):
    ok: bool
    message: str
    kind: str  # backup | restore
    path: str  # the file written or restored from (on the stick)
    seconds: float


@dataclass(frozen=True)
class UsbBackup(Request[UsbBackupReply]):
    """Back up to a block device or image now (as if plugged in)."""

    cmd: ClassVar[str] = "backup"
    device: str
