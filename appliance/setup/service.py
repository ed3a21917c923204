"""The ``setup`` service: the setup page over HTTPS, one process.

Composition root: the box's TLS identity (the Electrum listener's self-signed
certificate, so a phone sees one fingerprint for the box) -> :class:`ControlBox` (the
indexer's and the tower's control sockets, bitcoind for birthdays, the status bus for
the box's state, the pairing store for sessions) -> the aiohttp app -> one HTTPS
listener. Counters (redemptions, refusals) go on the status bus as service ``setup``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, TypeVar

from aiohttp import web

from ..config import Config
from ..control import ControlError, Request, ask
from ..control.messages import (
    IndexerStatus,
    PairedClientInfo,
    PairingList,
    PairingOpen,
    PairingPayload,
    PairingRedeemWeb,
    PairingRevoke,
    TowerUrl,
    WalletAdd,
    WalletAdded,
    WalletList,
    WalletRemove,
    WalletSummary,
)
from ..identity import IdentityError, load_hsm_secret
from ..node import BitcoinRPC
from ..pairing.store import KIND_WEB, PairedKeys
from ..status import Phase, StatusPublisher, StatusSubscriber, describe_states
from ..tls import certificate_fingerprint, ensure_certificate, server_ssl_context
from ..tor.keys import box_onion
from .app import Counters, make_app
from .birthday import height_for_date
from .sessions import RedeemLimiter, Session

__all__ = ["ControlBox", "main"]

log = logging.getLogger("setup")

_CERT_WAIT_S = 0.5

R = TypeVar("R")


class ControlBox:
    """:class:`~appliance.setup.app.BoxAPI` over the running services."""

    def __init__(self, cfg: Config, rpc: BitcoinRPC, bus: StatusSubscriber,
                 fingerprint: str) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.bus = bus
        self.network = cfg.hearth.network
        self.fingerprint = fingerprint
        try:
            self.onion = box_onion(cfg, load_hsm_secret(cfg.hsm_secret_file))
        except IdentityError:
            self.onion = None  # no secret yet: the page says nothing about Tor
        self.sessions = PairedKeys(cfg.paired_clients_file, KIND_WEB)

    async def _ask(self, service: str, request: Request[R], timeout: float = 10.0) -> R:
        return await asyncio.to_thread(ask, self.cfg.control_endpoint(service), request, timeout)

    def is_paired(self, session: Session) -> bool:
        return session.key_hash in self.sessions

    async def redeem(self, token: bytes, session: Session, label: str) -> None:
        await self._ask("indexer", PairingRedeemWeb(token.hex(), session.key_hash.hex(), label))

    async def wallet_add(self, items: list[str], birthday: int | None,
                         label: str) -> WalletAdded:
        return await self._ask("indexer", WalletAdd(items, birthday=birthday, label=label),
                               timeout=120)

    async def wallet_list(self) -> list[WalletSummary]:
        return await self._ask("indexer", WalletList())

    async def wallet_remove(self, wallet_id: str) -> None:
        await self._ask("indexer", WalletRemove(wallet_id))

    async def devices(self) -> list[PairedClientInfo]:
        return await self._ask("indexer", PairingList())

    async def revoke(self, key: str) -> None:
        await self._ask("indexer", PairingRevoke(key))

    async def pairing_open(self) -> None:
        await self._ask("indexer", PairingOpen())

    async def noise_code(self) -> str | None:
        return (await self._ask("indexer", PairingPayload(), timeout=5)).payload or None

    async def tls_port(self) -> int | None:
        return (await self._ask("indexer", IndexerStatus(), timeout=5)).electrum_ports.tls

    async def watchtower_url(self) -> str | None:
        return (await self._ask("tower", TowerUrl(), timeout=5)).url

    async def birthday_for(self, day: dt.date | None) -> int:
        try:
            tip = int(await self.rpc.call("getblockcount"))
            if day is None:
                return tip + 1  # a new wallet: nothing before the next block

            async def median_time(height: int) -> int:
                block_hash = await self.rpc.call("getblockhash", height)
                return int((await self.rpc.call("getblockheader", block_hash))["mediantime"])

            return await height_for_date(day, tip, median_time)
        except (OSError, ValueError, KeyError) as exc:
            raise ControlError(f"the node cannot say which block that date is ({exc})") from None

    def status_lines(self) -> tuple[str, list[str]]:
        """A headline and one line per service: the status bus, as the OLED reads it."""
        states = self.bus.snapshot()
        node = states.get("node")
        headline = "Starting"
        if node is not None and node.status is not None:
            c = node.status.counters
            if node.status.phase == Phase.READY:
                headline = f"Node synced at height {int(c.get('blocks', 0))}"
            elif node.status.progress is not None:
                headline = (f"Node syncing: {node.status.progress * 100:.1f}% "
                            f"(height {int(c.get('blocks', 0))})")
            free = int(c.get("disk_free_bytes", -1))
            if free >= 0:
                headline += f", {free / 2**30:.1f} GiB free"
        return headline, describe_states(states)


async def _certificate(cfg: Config) -> tuple[Any, str]:
    """The Electrum listener's certificate (made by the indexer), or our own when the
    TLS listener is off."""
    if cfg.electrum.tls == "lan":
        cert, key = cfg.electrum_tls_files
        while not (cert.exists() and key.exists()):
            await asyncio.sleep(_CERT_WAIT_S)  # the indexer makes it at its start
        fingerprint = certificate_fingerprint(cert.read_bytes())
    else:
        cert, key = cfg.setup_tls_files
        fingerprint = ensure_certificate(cert, key, hostname=cfg.electrum.hostname)
    return server_ssl_context(cert, key), fingerprint


async def main(cfg: Config) -> None:
    sc = cfg.setup
    async with StatusPublisher(cfg.hearth.run_dir, "setup") as status, \
            StatusSubscriber(cfg.hearth.run_dir) as bus, BitcoinRPC.from_config(cfg) as rpc:
        reader = asyncio.create_task(bus.run())
        runner: web.AppRunner | None = None
        try:
            if not sc.port:
                status.update(phase=Phase.READY, detail="off ([setup] port = 0)")
                await asyncio.Event().wait()
            status.update(phase=Phase.WAITING, detail="waiting for the TLS certificate")
            context, fingerprint = await _certificate(cfg)
            counters = Counters()
            box = ControlBox(cfg, rpc, bus, fingerprint)

            def publish() -> None:
                status.update(counters=counters.as_dict())

            app = make_app(box, RedeemLimiter(limit=sc.max_failed_redemptions), counters,
                           on_change=publish)
            runner = web.AppRunner(app, access_log=None)  # no URLs (tokens) in the log
            await runner.setup()
            site = web.TCPSite(runner, sc.bind, sc.port, ssl_context=context,
                               reuse_address=True)
            await site.start()
            log.info("setup page on https://%s:%d/ (certificate %s)", sc.bind, sc.port,
                     fingerprint[:23])
            status.update(phase=Phase.READY, detail=f"serving on port {sc.port}",
                          counters=counters.as_dict())
            await asyncio.Event().wait()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
