"""Debian's real Electrum (4.3.x) as a Lightning node in regtest, after Electrum's own
tests/regtest/regtest.sh: a seeded wallet with Lightning keys, gossip on (regtest has no
trampoline nodes), a short ``lightning_to_self_delay``, one server (the box's).

The daemon is driven over its own JSON-RPC (``rpcsock = tcp``): each command is one HTTP
request instead of a ~1 s Python start-up of the command line, which keeps the breach
test short. Only creating the wallet and starting the daemon use the command line.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from appliance.chain.encoding import hex_str_to_hash

from .util import free_port, wait_until

__all__ = ["ElectrumLN", "ElectrumLNError", "SweepRelay", "sat", "wait_for"]


class ElectrumLNError(Exception):
    """An error answered by Electrum's daemon (its message, as Electrum words it)."""


def sat(btc: Any) -> int:
    return int(Decimal(str(btc)) * 100_000_000)


class ElectrumLN:
    def __init__(self, directory: Path, name: str, *, listen: bool = False,
                 timeout_factor: float = 1.0) -> None:
        self.dir = directory
        self.name = name
        self.factor = timeout_factor
        self.rpc_port = free_port()
        self.rpc_password = secrets.token_hex(12)
        self.ln_port = free_port() if listen else None
        self.process: subprocess.Popen[bytes] | None = None
        self.cli("create", "--offline", "--seed_type", "segwit")
        config: dict[str, Any] = {
            "rpcsock": "tcp", "rpchost": "127.0.0.1", "rpcport": self.rpc_port,
            "rpcuser": "test", "rpcpassword": self.rpc_password,
            "log_to_file": True, "use_gossip": True, "auto_connect": False,
            "lightning_to_self_delay": 144, "dont_show_testnet_warning": True,
        }
        if self.ln_port is not None:
            config["lightning_listen"] = f"127.0.0.1:{self.ln_port}"
        self.set_config(**config)

    # --- offline ---------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.dir / "regtest" / "config"

    def set_config(self, **values: Any) -> None:
        """Edit the config file (daemon stopped): what ``setconfig --offline`` does."""
        assert self.process is None, "the daemon rewrites its config: stop it first"
        current = json.loads(self.config_file.read_text()) if self.config_file.exists() else {}
        current.update(values)
        self.config_file.write_text(json.dumps(current, indent=2))

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        res = subprocess.run(["electrum", "--regtest", "-D", str(self.dir), *args],
                             capture_output=True, text=True, timeout=timeout * self.factor)
        if check and res.returncode != 0:
            raise AssertionError(f"electrum ({self.name}) {' '.join(args)}: "
                                 f"{res.stdout}{res.stderr}")
        return res.stdout

    def xpub(self) -> str:
        """The wallet's master public key (a vpub: native segwit), for the box."""
        return self.cli("getmpk", "--offline").strip()

    def owns(self, address: str) -> bool:
        """Whether ``address`` is the wallet's, asked with the daemon stopped."""
        return json.loads(self.cli("ismine", address, "--offline")) is True

    # --- the daemon -----------------------------------------------------------------------
    def start(self, server: str) -> None:
        """Run the daemon in the foreground of a child process (so the test owns its pid),
        against one Electrum server ``host:port:t``, and load the wallet."""
        log = open(self.dir / "daemon.out", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            ["electrum", "--regtest", "-D", str(self.dir), "daemon", "--oneserver",
             "--server", server], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._rpc_up, timeout=60, factor=self.factor, interval=0.1)
        self.call("load_wallet")

    def _rpc_up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"electrum ({self.name}) exited: {self.daemon_output()}")
        try:
            with socket.create_connection(("127.0.0.1", self.rpc_port), timeout=1):
                return True
        except OSError:
            return False

    def daemon_output(self) -> str:
        path = self.dir / "daemon.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def log_text(self) -> str:
        logs = sorted((self.dir / "regtest" / "logs").glob("*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        """``stop`` over RPC, then wait for the process to exit (it is gone for good)."""
        if self.process is None:
            return
        try:
            self.call("stop", timeout=60)
        except (OSError, http.client.HTTPException, ElectrumLNError):
            pass  # already going down
        try:
            self.process.wait(timeout=60 * self.factor)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def call(self, method: str, timeout: float = 120, **params: Any) -> Any:
        auth = base64.b64encode(f"test:{self.rpc_password}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.rpc_port,
                                          timeout=timeout * self.factor)
        try:
            conn.request("POST", "/", json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                                  "params": params}),
                         {"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
            reply = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        if reply.get("error"):
            raise ElectrumLNError(f"{self.name} {method}: {reply['error']}")
        return reply["result"]

    # --- what the test asks -------------------------------------------------------------
    def synced_to(self, height: int) -> bool:
        info = self.call("getinfo")
        return bool(info.get("connected") and info.get("blockchain_height") == height
                    and self.call("is_synchronized"))

    def balance(self) -> tuple[int, int]:
        """(confirmed, unconfirmed) on-chain, in satoshis."""
        bal = self.call("getbalance")
        return sat(bal.get("confirmed", "0")), sat(bal.get("unconfirmed", "0"))

    def channel(self, point: str) -> dict[str, Any] | None:
        for chan in self.call("list_channels"):
            if chan.get("channel_point") == point:
                return dict(chan)
        return None

    def channel_state(self, point: str) -> str | None:
        chan = self.channel(point)
        return None if chan is None else str(chan["state"])

    def invoice(self, btc: str, memo: str) -> str:
        request = self.call("add_request", amount=btc, memo=memo)
        return str(request["lightning_invoice"])

    def pay(self, invoice: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("lnpay", invoice=invoice, timeout=60)
        if not result.get("success"):
            raise AssertionError(f"{self.name} could not pay: {result.get('log')}")
        return result


def wait_for(predicate: Any, what: str, timeout: float = 60.0, factor: float = 1.0) -> Any:
    """wait_until with a message saying what was awaited (the poll is 0.2 s)."""
    started = time.monotonic()
    try:
        return wait_until(predicate, timeout=timeout, factor=factor, interval=0.2)
    except AssertionError:
        raise AssertionError(f"timed out after {time.monotonic() - started:.0f}s "
                             f"waiting for {what}") from None


class SweepRelay:
    """What Electrum's ``watchtower_url`` points at to make TEOS appointments instead:
    a local JSON-RPC endpoint with Electrum's two tower methods that hands each
    presigned sweep to the box's tower as an encrypted appointment through the
    project's own client (``appliance.tower.client.TeosClient``). The locator and key
    come from the commitment the sweep spends (its prevout), so the box learns nothing
    until that commitment is broadcast."""

    def __init__(self, client: Any) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.client = client
        self.ctns: dict[str, int] = {}  # funding outpoint -> highest ctn relayed
        self.appointments: list[dict[str, Any]] = []  # what the tower acknowledged
        self.errors: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    req = json.loads(body)
                    result = relay.handle(req["method"], req["params"])
                    reply = {"jsonrpc": "2.0", "id": req.get("id"), "result": result}
                except Exception as exc:  # shown to the test, and to Electrum's log
                    relay.errors.append(repr(exc))
                    reply = {"jsonrpc": "2.0", "id": None, "error": {"message": repr(exc)}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, method: str, params: list[Any]) -> Any:
        if method == "get_ctn":
            return self.ctns.get(params[0], 0)
        if method == "add_sweep_tx":
            outpoint, ctn, prevout, raw_tx = params
            commitment_txid = hex_str_to_hash(prevout.split(":")[0])
            receipt = self.client.add_appointment(commitment_txid, bytes.fromhex(raw_tx))
            self.appointments.append({"ctn": ctn, "commitment": prevout.split(":")[0],
                                      "raw_tx": raw_tx, "receipt": receipt})
            self.ctns[outpoint] = max(self.ctns.get(outpoint, 0), int(ctn))
            return None
        raise ValueError(f"unknown method {method}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
