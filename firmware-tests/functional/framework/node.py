"""A real regtest bitcoind for tests (after Bitcoin Core's test_node.py).

``TestNode`` owns one bitcoind process and a synchronous RPC connection used as
*ground truth*: it is deliberately independent of ``appliance.node`` (the code under
test). Calls forward by name: ``node.getblockcount()``.

Defaults follow what the appliance needs in tests: pruning that really prunes
(``-prune=1 -fastprune`` plus ``pruneblockchain``), ZMQ rawblock/rawtx/hashblock/
sequence on loopback TCP, BIP158 block filters, Core relay policy and bech32
addresses (Knots defaults to legacy and stricter policy).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .util import free_port, wait_until

__all__ = ["NodeFactory", "RPCError", "TestNode", "ZMQ_TOPICS"]

log = logging.getLogger("framework.node")

ZMQ_TOPICS = ("rawblock", "rawtx", "hashblock", "sequence")

# Warm-up, loading wallet, etc.: bitcoind answers but is not ready.
RPC_IN_WARMUP = -28


class RPCError(Exception):
    def __init__(self, code: int, message: str, method: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.code = code
        self.message = message
        self.method = method


@dataclass
class TestNode:
    __test__ = False  # a fixture class, not a test case

    index: int
    datadir: Path
    bindir: Path
    extra_args: list[str] = field(default_factory=list)
    prune: bool = True
    timeout_factor: float = 1.0
    rpc_port: int = field(default_factory=free_port)
    p2p_port: int = field(default_factory=free_port)
    zmq: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    wallet: str = "truth"
    conf_file: Path | None = None  # run with this bitcoin.conf and no test defaults

    def __post_init__(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if not self.zmq:
            self.zmq = {t: f"tcp://127.0.0.1:{free_port()}" for t in ZMQ_TOPICS}
        self._conn: http.client.HTTPConnection | None = None

    # --- process -----------------------------------------------------------------
    @property
    def regtest_dir(self) -> Path:
        return self.datadir / "regtest"

    @property
    def cookie_file(self) -> Path:
        return self.regtest_dir / ".cookie"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def hearth_node(self, topics: tuple[str, ...] = ZMQ_TOPICS) -> dict[str, Any]:
        """hearth.toml's ``[node]`` section for this node (ZMQ endpoints of ``topics``)."""
        return {"rpc_url": self.rpc_url, "cookie_file": self.cookie_file,
                "bitcoin_dir": self.datadir, **{f"zmq_{t}": self.zmq[t] for t in topics}}

    def descriptors(self, wallet: str, *, internal: bool | None = None) -> list[str]:
        """The wallet's public wpkh() descriptors (receive and change, or the one
        ``internal`` picks)."""
        return [d["desc"] for d in self.rpc("listdescriptors", wallet=wallet)["descriptors"]
                if d["desc"].startswith("wpkh(") and internal in (None, d["internal"])]

    def account_xpub(self, wallet: str) -> str:
        """The tpub of the wallet's wpkh() account (what a phone wallet would show)."""
        return self.descriptors(wallet, internal=False)[0].split("]")[1].split("/")[0]

    def args(self) -> list[str]:
        if self.conf_file is not None:
            return [str(self.bindir / "bitcoind"), f"-datadir={self.datadir}",
                    f"-conf={self.conf_file}", "-printtoconsole=0", *self.extra_args]
        args = [
            str(self.bindir / "bitcoind"), f"-datadir={self.datadir}", "-regtest",
            "-server=1", "-listen=1", f"-bind=127.0.0.1:{self.p2p_port}",
            f"-rpcport={self.rpc_port}", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1",
            "-dnsseed=0", "-fixedseeds=0", "-discover=0", "-upnp=0", "-natpmp=0",
            "-printtoconsole=0", "-debug=zmq", "-debug=rpc", "-txindex=0",
            "-blockfilterindex=1", "-peerblockfilters=1", "-rest=1",  # as the box's conf
            "-addresstype=bech32", "-changetype=bech32", "-corepolicy=1",
            "-fallbackfee=0.0002", "-keypool=10", "-rpcworkqueue=64",
            "-shrinkdebugfile=0", "-maxmempool=50", "-persistmempool=0",
        ]
        if self.prune:
            args += ["-prune=1", "-fastprune"]
        args += [f"-zmqpub{t}={ep}" for t, ep in self.zmq.items()]
        return args + self.extra_args

    def start(self, *extra: str) -> None:
        assert self.process is None, "node already running"
        self.log(f"starting on rpc port {self.rpc_port}")
        stderr = open(self.datadir / "stderr.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen([*self.args(), *extra], stdout=subprocess.DEVNULL,
                                        stderr=stderr)
        stderr.close()
        self.wait_for_rpc_connection()
        if self.conf_file is None:
            # A restart: bitcoind loads no wallet by itself; load all the test made.
            loaded = set(self.rpc("listwallets"))
            for w in self.rpc("listwalletdir")["wallets"]:
                if w["name"] not in loaded:
                    self.rpc("loadwallet", w["name"])

    def wait_for_rpc_connection(self) -> None:
        deadline = time.monotonic() + 60 * self.timeout_factor
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                err = (self.datadir / "stderr.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"[node {self.index}] bitcoind exited "
                                   f"({self.process.returncode}): {err}")
            try:
                self.rpc("getblockcount")
                return
            except (ConnectionError, OSError, FileNotFoundError):
                pass
            except RPCError as exc:
                if exc.code != RPC_IN_WARMUP:
                    raise
            time.sleep(0.05)
        raise TimeoutError(f"[node {self.index}] RPC not ready in time")

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.rpc("stop")
        except Exception:  # already gone or unresponsive: signal below
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60 * self.timeout_factor)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close()
        self.process = None
        self.log("stopped")

    def kill(self) -> None:
        """kill -9, for crash tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self._close()

    def log(self, msg: str) -> None:
        log.info("[node %d] %s", self.index, msg)

    # --- RPC ---------------------------------------------------------------------------
    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def rpc(self, method: str, *params: Any, wallet: str | None = None,
            timeout: float = 120.0) -> Any:
        cookie = self.cookie_file.read_text().strip()
        auth = base64.b64encode(cookie.encode()).decode()
        body = json.dumps({"jsonrpc": "1.0", "id": method, "method": method,
                           "params": list(params)}, default=_json_default)
        path = f"/wallet/{wallet}" if wallet else "/"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.rpc_port,
                                                        timeout=timeout * self.timeout_factor)
            try:
                self._conn.request("POST", path, body, {"Authorization": f"Basic {auth}",
                                                        "Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, BrokenPipeError):
                self._close()  # keep-alive connection went away: reconnect once
                if attempt:
                    raise ConnectionError(f"[node {self.index}] RPC connection failed") from None
        if resp.status == 401:
            raise PermissionError(f"[node {self.index}] RPC auth failed")
        reply = json.loads(data, parse_float=Decimal)
        if reply.get("error"):
            err = reply["error"]
            raise RPCError(err["code"], err["message"], method)
        return reply["result"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *params, **kw: self.rpc(name, *params, **kw)

    def w(self, method: str, *params: Any) -> Any:
        """Call a method on the ground-truth wallet."""
        return self.rpc(method, *params, wallet=self.wallet)

    # --- chain helpers -----------------------------------------------------------------
    def ensure_wallet(self) -> None:
        if self.wallet in self.rpc("listwallets"):
            return
        try:
            self.rpc("loadwallet", self.wallet)
        except RPCError:
            self.rpc("createwallet", self.wallet)

    def new_address(self, kind: str = "bech32") -> str:
        return str(self.w("getnewaddress", "", kind))

    def mine(self, n: int = 1, address: str | None = None) -> list[str]:
        """Mine ``n`` blocks, paying the ground-truth wallet unless told otherwise."""
        address = address or self.new_address()
        return list(self.rpc("generatetoaddress", n, address))

    def send(self, address: str, amount: Decimal | float | str, **options: Any) -> str:
        return str(self.rpc("send", {address: str(amount)}, None, "unset", None,
                            options or None, wallet=self.wallet)["txid"])

    def reorg(self, depth: int, extra: int = 1, address: str | None = None) -> list[str]:
        """Replace the top ``depth`` blocks by ``depth + extra`` new ones.

        Wallet transactions in the dropped blocks go back to the mempool and are mined
        again unless the caller cleans the mempool first.
        """
        height = int(self.getblockcount())
        self.invalidateblock(self.getblockhash(height - depth + 1))
        # A different coinbase address makes the new blocks differ from the old ones.
        return self.mine(depth + extra, address or self.new_address("bech32m"))

    def prune_to(self, height: int) -> int:
        """Prune block files up to ``height`` (needs -prune=1); returns pruneheight."""
        return int(self.pruneblockchain(height))

    def snapshot(self, dest: Path) -> None:
        """Copy the regtest datadir to ``dest``, with bitcoind stopped cleanly (then
        started again): :meth:`restore` brings bitcoind back to this point, as after a
        power cut that lost the blocks it had not flushed."""
        self.stop()
        shutil.copytree(self.regtest_dir, dest)
        self.start()

    def restore(self, src: Path) -> None:
        """Start (stopped) bitcoind from a :meth:`snapshot`."""
        shutil.rmtree(self.regtest_dir)
        shutil.copytree(src, self.regtest_dir)
        self.start()


class NodeFactory:
    """Creates nodes for one test and always stops them, even when the test fails."""

    def __init__(self, basedir: Path, bindir: Path, timeout_factor: float = 1.0,
                 cache_dir: Path | None = None) -> None:
        self.basedir = basedir
        self.bindir = bindir
        self.timeout_factor = timeout_factor
        self.cache_dir = cache_dir
        self.nodes: list[TestNode] = []

    def create(self, *, prune: bool = True, extra_args: list[str] | None = None,
               from_cache: bool = True, start: bool = True) -> TestNode:
        index = len(self.nodes)
        datadir = self.basedir / f"node{index}"
        if from_cache and self.cache_dir is not None and not datadir.exists():
            shutil.copytree(self.cache_dir, datadir)
        node = TestNode(index, datadir, self.bindir, extra_args or [], prune,
                        self.timeout_factor)
        self.nodes.append(node)
        if start:
            node.start()
            node.ensure_wallet()
        return node

    def connect(self, a: TestNode, b: TestNode) -> None:
        a.addnode(f"127.0.0.1:{b.p2p_port}", "onetry")
        wait_until(lambda: any(p["addr"].endswith(f":{b.p2p_port}") for p in a.getpeerinfo()),
                   factor=self.timeout_factor)

    def stop_all(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:
                node.kill()


def build_cached_chain(cache_dir: Path, bindir: Path, blocks: int = 200,
                       timeout_factor: float = 1.0) -> Path:
    """Make (once) a regtest datadir with a wallet and ``blocks`` mined blocks.

    Mined with fixed timestamps isn't possible through generatetoaddress, but the chain
    only needs to exist: tests copy it so each starts from the same state.
    """
    done = cache_dir / ".complete"
    if done.exists():
        return cache_dir / "data"
    tmp = cache_dir / f"data.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    node = TestNode(0, tmp, bindir, [], True, timeout_factor)
    try:
        node.start()
        node.ensure_wallet()
        node.mine(blocks)
    finally:
        node.stop()
    for name in ("debug.log", "stderr.log"):
        for p in tmp.rglob(name):
            p.unlink()
    shutil.rmtree(cache_dir / "data", ignore_errors=True)
    tmp.rename(cache_dir / "data")
    done.touch()
    return cache_dir / "data"


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"not JSON serialisable: {o!r}")
