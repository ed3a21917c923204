"""The tower's process (supervisord program ``hearth-tower``): composition root.

Start-up order matters for "a kill -9 loses nothing": subscribe to ZMQ first, then let
the chain follower (:mod:`appliance.node.follower`) bring the store in step block by
block from the last block it saw (bitcoind keeps at least 288 when pruned) and check the
mempool; only then open the HTTP API. The follower handles reorgs, gaps, bitcoind
restarts (also behind the tower) through :class:`.follow.TowerListener`; the tower is
``ready`` only while it is in step with bitcoind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from aiohttp import web
from coincurve import PrivateKey

from ..chain import hash_to_hex_str
from ..config import Config
from ..control import ControlServer
from ..control.messages import (
    Audit,
    AuditReply,
    TowerStatus,
    TowerStatusReply,
    TowerUrl,
    TowerUrlReply,
)
from ..durability import DiskFull
from ..identity import derive_secp256k1, load_or_create_hsm_secret, write_secret_file
from ..node.follower import FOLLOWER_TOPICS, ChainFollower
from ..node.rpc import BitcoinRPC, NodeError, RPCError
from ..node.zmq_sub import ZMQSubscriber
from ..pairing.gate import detect_lan_ipv4
from ..pairing.store import PairedKeys
from ..status import KEEP, Phase, StatusPublisher
from ..status.fields import LAST_BREACH_STOPPED, LAST_BREACH_TS, LAST_BREACH_TXID, txid_counter
from ..tls import ensure_certificate, server_ssl_context
from .api import TowerAPI, TowerLimits
from .follow import TowerListener
from .gate import GatedSite
from .http import BasicAuth, RequestGuard, make_app
from .relay import TowerRelay
from .store import TowerStore
from .watcher import BroadcastResult, Watcher

__all__ = ["TowerService", "main", "tower_password"]

log = logging.getLogger("tower")

_WRITE_RETRY_S = 10.0  # how often a store whose write failed looks for room again


def tower_password(cfg: Config) -> str:
    """The HTTP Basic password: from the config, else made once and kept 0600."""
    if cfg.tower.password:
        return cfg.tower.password
    path = cfg.tower_password_file
    if not path.exists():
        write_secret_file(path, secrets.token_urlsafe(18).encode())
    return path.read_text().strip()


class TowerService:
    def __init__(self, cfg: Config, rpc: BitcoinRPC, store: TowerStore, sub: ZMQSubscriber,
                 status: StatusPublisher) -> None:
        self.cfg = cfg
        self.rpc = rpc
        self.store = store
        self.sub = sub
        self.status = status
        hsm_secret = load_or_create_hsm_secret(cfg.hsm_secret_file)
        tower_key = PrivateKey(derive_secp256k1(hsm_secret, "tower-key").secret)
        self.noise_key = derive_secp256k1(hsm_secret, "noise-static")
        tc = cfg.tower
        self.watcher = Watcher(store, self._broadcast, self._notify, finality_depth=tc.finality_depth,
                               fetch_tx=self._fetch_tx)
        self.api = TowerAPI(store, tower_key, lambda: self.watcher.height,
                            TowerLimits.configured(tc),
                            on_stored=self._stored, on_failed=lambda _exc: self._report())
        self._checks: set[asyncio.Task[int]] = set()
        self._shown_error: str | None = None
        self.auth = BasicAuth(tc.user, tower_password(cfg))
        self.runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}
        self.socket_path = cfg.tower_http_socket
        self.relay: TowerRelay | None = None
        self.http_guard = RequestGuard()  # one per-address budget across the listeners
        self.control = ControlServer(cfg.control_endpoint("tower"), {
            TowerStatus: self.cmd_status,
            TowerUrl: self.cmd_url,
            Audit: self.cmd_audit,
        })
        self.follower = ChainFollower(rpc, sub, TowerListener(store, self.watcher, rpc,
                                                              self._report, self._error))
        self.live = asyncio.Event()  # the HTTP API is open

    # --- bitcoind ----------------------------------------------------------------------
    async def _broadcast(self, raw: bytes) -> BroadcastResult:
        try:
            # maxfeerate 0: a penalty's fee is the user's choice; never refuse it for that.
            await self.rpc.call("sendrawtransaction", raw.hex(), 0, retry=True, deadline=30)
        except RPCError as exc:
            return BroadcastResult(False, exc.message)
        except Exception as exc:  # node down: retried on the next block
            return BroadcastResult(False, f"{type(exc).__name__}: {exc}")
        return BroadcastResult(True)

    async def _fetch_tx(self, txid: bytes, block_hash: bytes | None) -> bytes | None:
        params: list[object] = [hash_to_hex_str(txid), False]
        if block_hash is not None:
            params.append(hash_to_hex_str(block_hash))
        try:
            return bytes.fromhex(await self.rpc.call("getrawtransaction", *params))
        except (RPCError, NodeError) as exc:  # left the mempool, or pruned: nothing to do
            log.info("recent transaction %s is gone: %s", hash_to_hex_str(txid), exc)
            return None

    def _stored(self, locator: bytes) -> None:
        if locator not in self.watcher.recent:
            return
        task = asyncio.get_running_loop().create_task(self.watcher.check_recent(locator))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _notify(self, kind: str, detail: str) -> None:
        self.status.event(kind, detail)
        self._report()

    def _error(self, text: str | None) -> None:
        # Back in step with bitcoind clears its error, but not a store that cannot write.
        if text is not None or self.store.failed is None:
            self.status.update(last_error=text)
        self._report()

    # --- listeners -------------------------------------------------------------------------
    async def start_http(self) -> None:
        tc = self.cfg.tower
        targets: list[tuple[str, web.Application, dict[str, Any]]] = []
        if tc.http_port:
            targets.append(("http", make_app(self.api, auth=self.auth, lan_only=True,
                                             on_change=self._report, guard_with=self.http_guard),
                            {"host": tc.bind, "port": tc.http_port}))
        if tc.https_port:
            cert, key = self.cfg.tower_tls_files
            ensure_certificate(cert, key, hostname=self.cfg.electrum.hostname)
            targets.append(("https", make_app(self.api, auth=self.auth, lan_only=False,
                                              on_change=self._report, guard_with=self.http_guard),
                            {"host": tc.bind, "port": tc.https_port,
                             "ssl_context": server_ssl_context(cert, key)}))
        if tc.noise_port:
            self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.socket_path.unlink(missing_ok=True)
            targets.append(("unix", make_app(self.api, auth=None, lan_only=False,
                                             on_change=self._report, guard_with=self.http_guard),
                            {"path": str(self.socket_path)}))
        for name, app, where in targets:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            self.runners.append(runner)
            site: web.BaseSite
            if name == "unix":
                site = web.UnixSite(runner, where["path"])
            else:
                site = GatedSite(runner, where["host"], where["port"], gate=self.http_guard.gate,
                                 ssl_context=where.get("ssl_context"))
            await site.start()
            server = getattr(site, "_server", None)
            if name != "unix" and server is not None and server.sockets:
                self.ports[name] = server.sockets[0].getsockname()[1]
        if tc.noise_port:
            self.socket_path.chmod(0o600)
            self.relay = TowerRelay(self.noise_key,
                                    PairedKeys(self.cfg.paired_clients_file),
                                    self.socket_path)
            await self.relay.start(tc.bind, tc.noise_port)
            self.ports["noise"] = self.relay.port
        log.info("tower listening: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.ports.items())))

    async def stop_http(self) -> None:
        if self.relay is not None:
            await self.relay.close()
        for runner in self.runners:
            await runner.cleanup()

    # --- status / control ----------------------------------------------------------------
    def _counters(self) -> dict[str, int]:
        return {**self.store.counters, **self.watcher.stats,
                "http_refused": self.http_guard.refused,
                "handshakes_failed": self.relay.server.failed_handshakes
                if self.relay is not None and self.relay.server is not None else 0}

    def _last_breach(self) -> tuple[float, bool, str] | None:
        """(when seen, every penalty confirmed, breach txid) of the latest breach."""
        latest: dict[str, Any] | None = None
        for _txid, tracker in self.store.trackers():
            if latest is None or tracker["seen"] > latest["seen"]:
                latest = tracker
        if latest is None:
            return None
        stopped = all(p["height"] is not None for p in latest["penalties"])
        return float(latest["seen"]), stopped, str(latest["breach_txid"])

    def _ready(self) -> bool:
        return self.live.is_set() and self.follower.in_step

    def _report(self) -> None:
        # Ready only in step with bitcoind: never on a chain bitcoind does not have.
        phase = Phase.READY if self._ready() else \
            Phase.DEGRADED if self.live.is_set() else Phase.SYNCING
        counters: dict[str, int | float] = {**self._counters(), "height": self.watcher.height}
        detail = (f"watching {self.store.counters['sweeps']} sweeps, "
                  f"{self.store.counters['appointments']} appointments")
        last = self._last_breach()
        if last is not None:
            # Counters, not events: the display must still show it after a restart.
            counters |= {LAST_BREACH_TS: last[0], LAST_BREACH_STOPPED: int(last[1]),
                         LAST_BREACH_TXID: txid_counter(last[2])}
            detail = f"breach {last[2][:16]} {'stopped' if last[1] else 'penalty sent'}"
        failed = self.store.failed
        counters["disk_full"] = int(isinstance(failed, DiskFull))
        if failed is not None:
            # Nothing new is acknowledged until the store can write again: say so.
            phase, detail = Phase.DEGRADED, f"not storing: {failed.text}"
        # last_error only when it changes: each update with one restamps its time.
        error = failed.text if failed is not None else None
        new_error = error is not None and error != self._shown_error
        self._shown_error = error
        self.status.update(phase=phase, counters=counters, detail=detail,
                           last_error=error if new_error else KEEP)

    async def _retry_writes(self) -> None:
        """After a failed write, reopen the store once there is room (space freed)."""
        while True:
            await asyncio.sleep(_WRITE_RETRY_S)
            if self.store.failed is not None and self.store.recover():
                log.info("the tower store writes again")
                self._report()

    async def cmd_status(self, _req: TowerStatus) -> TowerStatusReply:
        tip = self.store.tip()
        return TowerStatusReply(height=self.watcher.height, live=self._ready(),
                                ports=dict(self.ports),
                                tip=hash_to_hex_str(tip[1]) if tip else None,
                                tower_id=self.api.tower_id.hex(), counters=self._counters())

    async def cmd_audit(self, _req: Audit) -> AuditReply:
        """The counters next to a count of what is stored (a full scan: tests, the soak)."""
        return AuditReply(counters=dict(self.store.counters), stored=self.store.stored_counts(),
                          writable=self.store.failed is None)

    async def cmd_url(self, _req: TowerUrl) -> TowerUrlReply:
        """What to paste into Electrum's ``watchtower_url`` (the password is in it: this
        socket is reachable only by the appliance's own user)."""
        port = self.ports.get("http")
        bind = self.cfg.tower.bind
        host = bind if bind not in ("0.0.0.0", "::", "") else (
            self.cfg.transport.advertise_host or detect_lan_ipv4())
        return TowerUrlReply(
            url=f"http://{self.cfg.tower.user}:{tower_password(self.cfg)}@{host}:{port}"
            if port else None, tower_id=self.api.tower_id.hex(), ports=dict(self.ports))

    async def run(self) -> None:
        control = asyncio.create_task(self.control.serve(), name="control")
        retry = asyncio.create_task(self._retry_writes(), name="retry-writes")
        follower = asyncio.create_task(self.follower.run(), name="follower")
        try:
            self.status.update(phase=Phase.SYNCING, detail="checking recent blocks")
            synced = asyncio.create_task(self.follower.synced.wait())
            done, _ = await asyncio.wait([synced, follower], return_when=asyncio.FIRST_COMPLETED)
            if synced not in done:  # the follower ended before the first sync
                synced.cancel()
                follower.result()
                return
            await self.start_http()
            self.live.set()
            self._report()
            log.info("tower live at height %d", self.watcher.height)
            await follower
        finally:
            follower.cancel()
            control.cancel()
            retry.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await self.stop_http()


async def main(cfg: Config) -> None:
    async with StatusPublisher(cfg.hearth.run_dir, "tower") as status, \
            BitcoinRPC.from_config(cfg) as rpc:
        sub = ZMQSubscriber.from_config(cfg, FOLLOWER_TOPICS)
        try:
            status.update(phase=Phase.WAITING, detail="waiting for bitcoind")
            await rpc.wait_ready(timeout=float("inf"))
            store = TowerStore(cfg.service_dir("tower") / "db", cache_mib=cfg.tower.db_cache_mib)
            try:
                await TowerService(cfg, rpc, store, sub, status).run()
            finally:
                store.close()
        except Exception as exc:
            status.update(phase=Phase.ERROR, last_error=exc)
            raise
        finally:
            sub.close()


