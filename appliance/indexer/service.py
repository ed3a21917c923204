"""The ``indexer`` service: the personal index and the Electrum server, one process.

One process, because LevelDB allows one per database and the Electrum server reads the
index on every request. Composition root: bitcoind RPC and ZMQ -> node.ChainFollower ->
IndexListener (blocks, mempool) -> Indexer (LevelDB); Backfiller (late wallets) -> IndexBackend ->
Electrum SessionManager -> TCP/TLS listeners; a control socket takes wallet commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from ..chain import double_sha256, hash_to_hex_str, hex_str_to_hash
from ..config import Config
from ..control import ControlError, ControlServer
from ..control.messages import (
    Backfill,
    Branch,
    ElectrumPorts,
    IndexerStatus,
    IndexerStatusReply,
    PairedClientInfo,
    PairingList,
    PairingOpen,
    PairingPayload,
    PairingRedeemWeb,
    PairingReset,
    PairingRevoke,
    PairingState,
    Payload,
    Redeemed,
    Removed,
    ResetDone,
    Revoked,
    WalletAdd,
    WalletAdded,
    WalletList,
    WalletRemove,
    WalletSummary,
    WindowOpen,
)
from ..durability import WriteFailed
from ..electrum.handlers import ServerInfo
from ..electrum.server import ElectrumServer, SessionManager
from ..identity import derive_secp256k1, load_or_create_hsm_secret
from ..node import BitcoinRPC, ZMQSubscriber
from ..node.follower import FOLLOWER_TOPICS
from ..pairing.gate import NoiseGate
from ..pairing.store import KIND_WEB, Whitelist
from ..pairing.window import PairingWindow, encode_web_token
from ..status import Phase, StatusPublisher
from ..tls import ensure_certificate, server_ssl_context
from ..tor.keys import box_onion
from ..usb.phrase import is_acknowledged
from . import heap
from .adhoc_catchup import AdhocCatchUp
from .backfill import Backfiller
from .electrum_backend import IndexBackend
from .follower import IndexListener
from .index import Indexer
from .store import IndexStore
from .wallets import Wallet, WalletError
from .zmq_reader import LoopSubscriber

__all__ = ["IndexerService", "main"]

log = logging.getLogger("indexer")


_REPORT_EVERY = 1.0  # seconds between status-bus updates (unchanged ones send nothing)
_ADHOC_UPKEEP_EVERY = 3600.0


class IndexerService:
    def __init__(self, cfg: Config, rpc: BitcoinRPC, store: IndexStore,
                 sub: ZMQSubscriber, status: StatusPublisher) -> None:
        self.cfg = cfg
        self.status = status
        self._unknown_seen = 0
        self.rpc = rpc
        self.indexer = Indexer(store, rpc, cfg.hearth.network)
        self.indexer.load()
        self.backend = IndexBackend(self.indexer, rpc, on_gap_extended=self._gap_extended)
        self.follower = IndexListener(self.indexer, rpc, sub, self.backend.notify_scripthashes,
                                      self.backend.notify_tip)
        self.adhoc = AdhocCatchUp(self.indexer, self.follower, rpc,
                                  self.backend.notify_scripthashes)
        self.backend.on_adhoc = self.adhoc.add
        self.backfiller = Backfiller(self.indexer, self.follower, rpc,
                                     self.backend.notify_scripthashes)
        ec = cfg.electrum
        hosts = {ec.hostname: {"tcp_port": ec.tcp_port or None,
                               "ssl_port": ec.tls_port if ec.tls == "lan" else None}}
        info = ServerInfo(hosts=hosts)
        if ec.banner:
            info = dataclasses.replace(info, banner=ec.banner)
        self.sessions = SessionManager.configured(self.backend, info, ec)
        self.backend.is_subscribed = self.sessions.is_subscribed
        ssl_context = None
        tls_port = ec.tls_port if ec.tls == "lan" else None
        self.tls_fingerprint: str | None = None
        if tls_port:
            tls_dir = cfg.service_dir("indexer")
            cert, key = tls_dir / "electrum-cert.pem", tls_dir / "electrum-key.pem"
            self.tls_fingerprint = ensure_certificate(cert, key, hostname=ec.hostname)
            ssl_context = server_ssl_context(cert, key)
        self.server = ElectrumServer(self.sessions, host=ec.bind, tcp_port=ec.tcp_port or None,
                                     tls_port=tls_port, ssl_context=ssl_context)
        tc = cfg.transport
        self.gate: NoiseGate | None = None
        if tc.noise_port:
            hsm_secret = load_or_create_hsm_secret(cfg.hsm_secret_file)
            node_key = derive_secp256k1(hsm_secret, "noise-static")
            self.gate = NoiseGate(
                node_key, Whitelist(cfg.service_dir("indexer") / "paired-clients.json"),
                PairingWindow(), self.sessions, {
                    "hearth.wallet.add": self._hearth_wallet_add,
                    "hearth.wallet.list": self._hearth_wallet_list,
                    "hearth.wallet.remove": self._hearth_wallet_remove,
                    "hearth.status": self._hearth_status,
                }, advertise_host=tc.advertise_host, onion=box_onion(cfg, hsm_secret),
                window_seconds=tc.pairing_window_s,
                pairing_allowed=lambda: is_acknowledged(cfg) or not cfg.usb.phrase_gate)
        self.control = ControlServer(cfg.control_endpoint("indexer"), {
            WalletAdd: self.cmd_wallet_add,
            WalletList: self.cmd_wallet_list,
            WalletRemove: self.cmd_wallet_remove,
            IndexerStatus: self.cmd_status,
            PairingList: self.cmd_pairing_list,
            PairingRevoke: self.cmd_pairing_revoke,
            PairingReset: self.cmd_pairing_reset,
            PairingOpen: self.cmd_pairing_open,
            PairingPayload: self.cmd_pairing_payload,
            PairingRedeemWeb: self.cmd_pairing_redeem_web,
        })

    def _gap_extended(self) -> None:
        self.backfiller.wakeup.set()

    async def run(self) -> None:
        await self.indexer.refresh_lookahead()
        tasks = [asyncio.create_task(self.follower.run(), name="follower"),
                 asyncio.create_task(self.backfiller.run(), name="backfill"),
                 asyncio.create_task(self.adhoc.run(), name="adhoc-catchup"),
                 asyncio.create_task(self._adhoc_upkeep(), name="adhoc-upkeep"),
                 asyncio.create_task(self.control.serve(), name="control"),
                 asyncio.create_task(self._report(), name="status")]
        try:
            # In step, or paused by a full disk before that: either way what is on disk
            # is consistent and is served.
            synced = asyncio.create_task(self.follower.serving.wait())
            done, _ = await asyncio.wait([synced, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if synced not in done:  # the follower died before the first sync
                synced.cancel()
                for t in done:
                    t.result()
            heap.settle()
            tip = self.indexer.tip()
            log.info("index at height %s; %d wallets", tip[0] if tip else None,
                     len(self.indexer.wallets))
            await self.server.start()
            if self.gate is not None:
                await self.gate.start(self.cfg.transport.bind, self.cfg.transport.noise_port)
            log.info("serving Electrum RPC")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.gate is not None:
                await self.gate.close()
            await self.server.close()
            self.control.close()

    async def _adhoc_upkeep(self) -> None:
        """Hourly: keep subscribed ad-hoc watches fresh, forget long-unsubscribed ones."""
        while True:
            try:
                gone = self.indexer.upkeep_adhoc(int(time.time()), self.sessions.is_subscribed)
            except WriteFailed as exc:  # a full disk: the next round does it
                log.warning("ad-hoc upkeep not stored: %s", exc.text)
                gone = set()
            if gone:
                await self.backend.notify_scripthashes(gone)
            await asyncio.sleep(_ADHOC_UPKEEP_EVERY)

    # --- status bus ------------------------------------------------------------------------
    async def _report(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(_REPORT_EVERY)

    def report(self) -> None:
        """Phase, backfill progress and counters, as docs/status-bus.md names them."""
        tip = self.indexer.tip()
        stats = self.follower.stats
        electrum = self.sessions.stats()
        running = [p for wid, p in self.backfiller.progress.items() if p.percent < 100.0]
        done = sum(p.done for p in running)
        total = sum(p.end - p.start + 1 for p in running)
        if self.follower.paused is not None:
            # A write failed (a full disk): serving what is on disk, retrying; the
            # follower's last_error says why.
            phase, progress, eta = Phase.DEGRADED, None, None
            detail = f"index paused at height {tip[0] if tip else -1}: {self.follower.paused}"
        elif not self.follower.synced.is_set():
            phase, progress, eta, detail = Phase.SYNCING, None, None, "catching up with bitcoind"
        elif not self.follower.chain.in_step:  # bitcoind down, or behind us: never "ready"
            phase, progress, eta, detail = Phase.DEGRADED, None, None, "waiting for bitcoind"
        elif running:
            etas = [e for p in running if (e := p.eta_seconds) is not None]
            phase, progress = Phase.BACKFILLING, done / total if total else None
            eta = max(etas) if etas else None
            detail = f"{len(running)} wallet(s) backfilling"
        else:
            phase, progress, eta = Phase.READY, None, None
            detail = f"{len(self.indexer.wallets)} wallets, {electrum['sessions']} clients"
        self.status.update(phase=phase, progress=progress, eta_s=eta, detail=detail,
                           last_error=stats.last_error or None, counters={
                               "height": tip[0] if tip else -1,
                               "wallets": len(self.indexer.wallets),
                               "scripts": len(self.indexer.scripts.refs),
                               "adhoc_scripts": len(self.indexer.adhoc),
                               "mempool_txs": len(self.indexer.mempool.txs),
                               "electrum_sessions": electrum["sessions"],
                               "blocks_indexed": stats.blocks, "reorgs": stats.reorgs,
                               "resyncs": stats.resyncs, "backfill_done": done,
                               # 1 while a write is refused for a full disk (the OLED's page)
                               "disk_full": int(self.follower.disk_full),
                               "backfill_total": total,
                               "unknown_script_queries": electrum["unknown_script_queries"],
                               # fair sharing: what a flood was refused (docs/threat-model.md)
                               "sessions_refused": electrum["sessions_refused"],
                               "requests_refused": electrum["requests_refused"],
                               "handshakes_failed": self.gate.server.failed_handshakes
                               if self.gate is not None and self.gate.server else 0,
                               # the display shows the pairing QR while this is 1
                               "pairing_open": int(self.gate is not None
                                                   and self.gate.window.is_open),
                               "paired_clients": len(self.gate.whitelist.clients)
                               if self.gate is not None else 0,
                           })
        unknown = electrum["unknown_script_queries"]
        if unknown > self._unknown_seen:
            # "An unknown wallet is querying": shown on the display and in appliance status.
            self.status.event("unknown_wallet_query", count=unknown - self._unknown_seen)
            self._unknown_seen = unknown

    # --- control commands (types in appliance/control/messages.py) --------------------------
    def _summary(self, wallet: Wallet) -> WalletSummary:
        prog = self.backfiller.progress.get(wallet.wallet_id)
        return WalletSummary(
            id=wallet.id_hex, label=wallet.label, state=wallet.state,
            birthday=wallet.birthday, gap=wallet.gap, change_gap=wallet.change_gap,
            branches=[Branch(b.descriptor, b.derived, b.used) for b in wallet.branches],
            backfill=Backfill.from_wire(prog.as_dict())
            if prog is not None and wallet.state != "live" else None,
            jobs=wallet.jobs, error=self.backfiller.errors.get(wallet.wallet_id))

    async def cmd_wallet_add(self, req: WalletAdd) -> WalletAdded:
        if req.birthday is not None and req.birthday < 0:
            raise ControlError("birthday must be a block height")
        try:
            wallet, new = await self.indexer.add_wallet(
                req.descriptors, birthday=req.birthday,
                gap=req.gap or self.cfg.indexer.gap_limit,
                change_gap=req.change_gap or self.cfg.indexer.change_gap_limit,
                label=req.label)
        except WalletError as exc:
            raise ControlError(str(exc)) from None
        except WriteFailed as exc:  # e.g. a full disk: not added, and it says why
            raise ControlError(f"wallet not added: {exc.text}") from None
        self.backfiller.wakeup.set()
        await self.indexer.refresh_lookahead()
        return WalletAdded(new, self._summary(wallet))

    async def cmd_wallet_list(self, req: WalletList) -> list[WalletSummary]:
        return [self._summary(w) for w in self.indexer.wallets.values()]

    async def cmd_wallet_remove(self, req: WalletRemove) -> Removed:
        matches = [w for w in self.indexer.wallets if w.hex().startswith(req.id)]
        if not req.id or len(matches) != 1:
            raise ControlError(f"no single wallet with id {req.id!r}")
        try:
            async with self.follower.chain_lock:  # no block lands while it is removed
                touched = await self.indexer.remove_wallet(matches[0])
        except WriteFailed as exc:
            raise ControlError(f"wallet not removed: {exc.text}") from None
        await self.backend.notify_scripthashes(touched)
        return Removed(matches[0].hex())

    async def cmd_status(self, req: IndexerStatus) -> IndexerStatusReply:
        tip = self.indexer.tip()
        header = self.indexer.store.header(tip[0]) if tip else None
        stats = self.follower.stats
        return IndexerStatusReply(
            height=tip[0] if tip else None,
            tip=hash_to_hex_str(double_sha256(header)) if header else None,
            wallets=len(self.indexer.wallets),
            scripts=len(self.indexer.scripts.refs),
            adhoc_scripts=len(self.indexer.adhoc),
            adhoc_catchups=self.adhoc.passes,
            mempool_txs=len(self.indexer.mempool.txs),
            blocks_indexed=stats.blocks, reorgs=stats.reorgs, resyncs=stats.resyncs,
            last_block_ms=round(stats.last_block_ms, 1),
            electrum=self.sessions.stats(),
            electrum_ports=ElectrumPorts(tcp=self._port("tcp"), tls=self._port("tls")),
            pairing=self._pairing_state())

    # --- pairing ------------------------------------------------------------------------------
    def _need_gate(self) -> NoiseGate:
        if self.gate is None or self.gate.server is None:
            raise ControlError("the Noise listener is off (transport.noise_port = 0)")
        return self.gate

    def _pairing_state(self) -> PairingState | None:
        if self.gate is None or self.gate.server is None:
            return None
        g = self.gate
        return PairingState(
            noise_port=g.port, box_key=g.node_key.public.hex(), window_open=g.window.is_open,
            window_seconds_left=g.window.seconds_left(), paired=len(g.whitelist.clients),
            refused=g.counters.refused,
            failed_handshakes=g.server.failed_handshakes if g.server else 0,
            connected=sum(len(s) for s in g.live.values()))

    async def cmd_pairing_list(self, req: PairingList) -> list[PairedClientInfo]:
        gate = self._need_gate()
        return [PairedClientInfo(c.pubkey, c.label, c.paired_at, c.kind, len(gate.live.get(k, ())))
                for k, c in gate.whitelist.clients.items()]

    async def cmd_pairing_revoke(self, req: PairingRevoke) -> Revoked:
        gate = self._need_gate()
        prefix = req.key.lower()
        keys = [k for k in gate.whitelist.clients if k.hex().startswith(prefix)]
        if not prefix or len(keys) != 1:
            raise ControlError(f"no single paired client with key {prefix!r}")
        gate.revoke(keys[0])
        return Revoked(keys[0].hex())

    async def cmd_pairing_reset(self, req: PairingReset) -> ResetDone:
        return ResetDone(self._need_gate().reset())

    async def cmd_pairing_open(self, req: PairingOpen) -> WindowOpen:
        gate = self._need_gate()
        gate.open_window()
        return WindowOpen(gate.window.seconds_left())

    async def cmd_pairing_payload(self, req: PairingPayload) -> Payload:
        gate = self._need_gate()
        payload = gate.payload()
        tls = self._port("tls")
        # Stock phone wallets (no Noise yet) scan "host:port:s" and pin the certificate.
        server = f"{gate.host()}:{tls}:s" if payload and tls else None
        # The setup page's link for phones (upper case: QR alphanumeric mode).
        setup = self.cfg.setup.port
        url = (f"HTTPS://{gate.host()}:{setup}/P/{encode_web_token(gate.window.web_token)}"
               if payload and setup else None)
        return Payload(payload=payload, window_seconds_left=gate.window.seconds_left(),
                       setup_url=url, tls_server=server,
                       tls_fingerprint=self.tls_fingerprint if server or url else None)

    async def cmd_pairing_redeem_web(self, req: PairingRedeemWeb) -> Redeemed:
        """Only the session cookie's hash comes here and is kept (see pairing/store.py)."""
        gate = self._need_gate()
        token, digest = bytes.fromhex(req.token), bytes.fromhex(req.session_hash)
        if len(digest) != 32:
            raise ControlError("session_hash must be 32 bytes")
        if not gate.pairing_allowed() or not gate.window.redeem_web(token):
            raise ControlError("pairing link refused (used, expired or wrong)")
        gate.whitelist.add(digest, req.label[:64], KIND_WEB)
        gate.counters.paired += 1
        log.info("paired a browser %s (%s)", digest.hex()[:16], req.label or "no label")
        return Redeemed(digest.hex())

    # --- the same wallet commands for paired clients, over Noise (hearth.* JSON-RPC) --------
    async def _hearth_wallet_add(self, params: Any, client: bytes) -> Any:
        req = WalletAdd.from_wire(_params(params, "descriptors", "birthday", "label"))
        return (await self.cmd_wallet_add(req)).to_wire()

    async def _hearth_wallet_list(self, params: Any, client: bytes) -> Any:
        return [w.to_wire() for w in await self.cmd_wallet_list(WalletList())]

    async def _hearth_wallet_remove(self, params: Any, client: bytes) -> Any:
        req = WalletRemove.from_wire(_params(params, "id"))
        return (await self.cmd_wallet_remove(req)).to_wire()

    async def _hearth_status(self, params: Any, client: bytes) -> Any:
        status = (await self.cmd_status(IndexerStatus())).to_wire()
        return {k: status[k] for k in ("height", "tip", "wallets", "mempool_txs")}

    def _port(self, kind: str) -> int | None:
        try:
            return self.server.port(kind)
        except KeyError:  # not listening (yet, or switched off)
            return None


def _params(params: Any, *names: str) -> dict[str, Any]:
    """JSON-RPC params by name (an object) or by position (a list)."""
    if isinstance(params, dict):
        return params
    if isinstance(params, list):
        return dict(zip(names, params, strict=False))
    if params is None:
        return {}
    raise ValueError("params must be an object or a list")


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "indexer") as status, \
            BitcoinRPC.from_config(cfg) as rpc:
        # Subscribe before the first RPC read, so nothing published meanwhile is lost.
        # Read in batches on the loop: a mempool burst costs no wake-up per message.
        sub = LoopSubscriber.from_config(cfg, FOLLOWER_TOPICS)
        try:
            log.info("waiting for bitcoind at %s", rpc.url)
            status.update(phase=Phase.WAITING, detail="waiting for bitcoind")
            await rpc.wait_ready(timeout=float("inf"))
            genesis = hex_str_to_hash(await rpc.call("getblockhash", 0))
            store = IndexStore(cfg.service_dir("indexer") / "index", genesis,
                               cache_mib=cfg.indexer.db_cache_mib)
            try:
                await IndexerService(cfg, rpc, store, sub, status).run()
            finally:
                try:
                    store.sync()
                except WriteFailed as exc:  # a full disk: LevelDB's log replays at start
                    log.warning("index not flushed at shutdown: %s", exc.text)
                store.close()
        except Exception as exc:
            status.update(phase=Phase.ERROR, last_error=exc)  # a crash, not a clean stop
            raise
        finally:
            sub.close()
