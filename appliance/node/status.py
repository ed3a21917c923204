"""What bitcoind is doing, in one typed snapshot (for ``appliance status`` and the OLED)."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Config
from .rpc import BitcoinRPC, NodeError

__all__ = ["NodeStatus", "fetch_node_status", "read_node_status"]


@dataclass(frozen=True)
class NodeStatus:
    chain: str
    blocks: int
    headers: int
    progress: float  # verificationprogress, 0..1
    initial_block_download: bool
    pruned: bool
    prune_height: int | None
    size_on_disk: int
    peers: int
    version: str
    disk_free: int | None
    best_block_hash: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> list[str]:
        sync = "synced" if not self.initial_block_download else f"syncing {self.progress:.1%}"
        lines = [
            f"node: {self.version} on {self.chain}, {sync}",
            f"  blocks {self.blocks} / headers {self.headers}, {self.peers} peers",
            f"  {self.size_on_disk / 2**20:.0f} MiB on disk"
            + (f", pruned below {self.prune_height}" if self.pruned and self.prune_height else ""),
        ]
        if self.disk_free is not None:
            lines.append(f"  {self.disk_free / 2**30:.1f} GiB free")
        return lines


async def fetch_node_status(rpc: BitcoinRPC, cfg: Config) -> NodeStatus:
    chain, network, count = await rpc.batch([
        ("getblockchaininfo", []), ("getnetworkinfo", []), ("getconnectioncount", [])])
    for item in (chain, network, count):
        if isinstance(item, Exception):
            raise item
    try:
        disk_free: int | None = shutil.disk_usage(cfg.node.bitcoin_dir).free
    except OSError:
        disk_free = None
    return NodeStatus(
        chain=chain["chain"], blocks=int(chain["blocks"]), headers=int(chain["headers"]),
        progress=float(chain["verificationprogress"]),
        initial_block_download=bool(chain["initialblockdownload"]),
        pruned=bool(chain["pruned"]), prune_height=chain.get("pruneheight"),
        size_on_disk=int(chain["size_on_disk"]), peers=int(count),
        version=str(network["subversion"]).strip("/"), disk_free=disk_free,
        best_block_hash=chain["bestblockhash"])


async def read_node_status(cfg: Config) -> NodeStatus | str:
    """The snapshot, or a one-line reason why bitcoind cannot tell (never a secret)."""
    async with BitcoinRPC.from_config(cfg) as rpc:
        try:
            return await fetch_node_status(rpc, cfg)
        except NodeError as exc:
            return f"unavailable: {exc}"
