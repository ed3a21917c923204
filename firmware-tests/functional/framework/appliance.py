"""The appliance's services as real processes in tests (``appliance run ...``).

``IndexerProcess`` runs the indexer + Electrum server against a TestNode, the way
supervisord runs it on the box, and waits for its "serving Electrum RPC" log line
(the electrs pattern). ``ElectrumClient`` is a minimal line-JSON client for asserting
protocol answers; the end-to-end tests also drive Debian's real Electrum wallet.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.chain.script import scripthash_hex

from .node import TestNode
from .util import APPLIANCE, free_port, hearth_section, stop_process, wait_until, write_config

__all__ = ["ElectrumClient", "ElectrumError", "IndexerProcess", "scripthash_of"]



def scripthash_of(script_hex: str) -> str:
    return scripthash_hex(bytes.fromhex(script_hex))


class ElectrumError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('message')} (code {error.get('code')})")
        self.code = error.get("code")
        self.message = str(error.get("message"))


class ElectrumClient:
    def __init__(self, port: int, *, tls: bool = False, timeout: float = 30.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # self-signed; pinning is the wallet's job
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rwb")
        self.next_id = 0
        self.notifications: deque[dict[str, Any]] = deque()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send_raw(self, line: bytes) -> None:
        self.file.write(line)
        self.file.flush()

    def read(self) -> Any:
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        return json.loads(line)

    def call(self, method: str, *params: Any) -> Any:
        self.next_id += 1
        self.send_raw(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                  "params": list(params)}).encode() + b"\n")
        while True:
            msg = self.read()
            if "id" not in msg or msg["id"] is None and "method" in msg:
                self.notifications.append(msg)
                continue
            if msg.get("error"):
                raise ElectrumError(msg["error"])
            return msg["result"]

    def wait_notification(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, n in enumerate(self.notifications):
                if n["method"] == method:
                    del self.notifications[i]
                    return n
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.notifications.append(self.read())
            except TimeoutError:
                raise AssertionError(f"no {method} notification in {timeout}s") from None
            finally:
                self.sock.settimeout(30.0)


class ServiceProcess:
    """``appliance run SERVICE`` against a TestNode: its config (the [hearth] and [node]
    sections every service shares, then the service's own), its log, start and stop."""

    service = ""
    ready_log = ""  # the log line that says the service is up
    ready_timeout = 60.0

    def __init__(self, base: Path, node: TestNode, sections: Mapping[str, Mapping[str, Any]],
                 *, timeout_factor: float = 1.0) -> None:
        self.base = base
        self.node = node
        self.factor = timeout_factor
        self.config = base / "hearth.toml"
        self.log_file = base / f"{self.service}.log"
        base.mkdir(parents=True, exist_ok=True)
        write_config(self.config, {"hearth": hearth_section(base), "node": node.hearth_node(),
                                   **sections, "log": {"level": "debug"}})
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, wait: bool = True) -> None:
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        out = open(self.log_file, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen([APPLIANCE, "run", self.service, "--config",
                                         str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if wait:
            self.wait_log(self.ready_log, timeout=self.ready_timeout)

    def log_text(self, since_start: bool = False) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return text[self._log_offset:] if since_start else text

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait for ``text`` in what this run (since the last start) logged."""
        def seen() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.service} exited ({self.process.returncode}):\n"
                                     + self.log_text()[-4000:])
            return text in self.log_text(since_start=True)
        wait_until(seen, timeout=timeout, factor=self.factor)

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout=30)
        rc = self.process.returncode
        self.process = None
        assert rc == 0, f"{self.service} exit code {rc}:\n{self.log_text()[-4000:]}"

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([APPLIANCE, *args, "--config", str(self.config)],
                             capture_output=True, text=True, timeout=180)
        if check and res.returncode != 0:
            raise AssertionError(f"appliance {' '.join(args)}: {res.stderr}{res.stdout}")
        return res


class IndexerProcess(ServiceProcess):
    service = "indexer"
    ready_log = "serving Electrum RPC"
    ready_timeout = 120.0

    def __init__(self, base: Path, node: TestNode, *, timeout_factor: float = 1.0,
                 sections: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """``sections``: more hearth.toml tables (e.g. ``tor``, ``setup``)."""
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.noise_port = free_port()
        super().__init__(base, node, {
            "electrum": {"bind": "127.0.0.1", "tcp_port": self.tcp_port,
                         "tls_port": self.tls_port, "hostname": "localhost"},
            "transport": {"noise_port": self.noise_port, "bind": "127.0.0.1",
                          "advertise_host": "127.0.0.1"},
            # No usb service here to page through the recovery phrase: pairing opens at once.
            "usb": {"phrase_gate": False},
            **(sections or {}),
        }, timeout_factor=timeout_factor)
        self.clients: list[ElectrumClient] = []

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()

    def stop(self) -> None:
        self.close_clients()
        super().stop()

    def kill(self) -> None:
        self.close_clients()
        super().kill()

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.cli("status", "--json").stdout)
        return report

    def wallet_add(self, *descriptors: str, birthday: int | None = None) -> str:
        args = ["wallet", "add", *descriptors]
        if birthday is not None:
            args += ["--birthday", str(birthday)]
        out = self.cli(*args).stdout
        return out.split()[1]

    def wallets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self.cli("wallet", "list", "--json").stdout)
        return result

    def wait_synced(self, timeout: float = 60.0) -> None:
        """Index tip == node tip, and every wallet live."""
        def done() -> bool:
            st = self.status()["indexer"]
            if isinstance(st, str):
                return False
            return bool(st["height"] == self.node.getblockcount()
                        and st["tip"] == self.node.getbestblockhash()
                        and all(w["state"] == "live" for w in self.wallets()))
        wait_until(done, timeout=timeout, factor=self.factor, interval=0.2)

    def client(self, tls: bool = False, version: str = "1.4") -> ElectrumClient:
        c = ElectrumClient(self.tls_port if tls else self.tcp_port, tls=tls)
        self.clients.append(c)
        c.call("server.version", "hearth-tests", version)
        return c


class TowerProcess(ServiceProcess):
    """``appliance run tower`` against a TestNode, with fixed credentials.

    ``url`` is what Electrum's ``watchtower_url`` takes; :meth:`post` speaks to the HTTP
    API directly (TEOS paths, raw bodies for the bad-input tests)."""

    service = "tower"
    ready_log = "tower live"
    USER = "tower-test"
    PASSWORD = "correct horse battery staple"

    def __init__(self, base: Path, node: TestNode, *, timeout_factor: float = 1.0) -> None:
        self.http_port = free_port()
        self.https_port = free_port()
        self.noise_port = free_port()
        super().__init__(base, node, {
            "electrum": {"hostname": "localhost"},
            "tower": {"bind": "127.0.0.1", "http_port": self.http_port,
                      "https_port": self.https_port, "noise_port": self.noise_port,
                      "user": self.USER, "password": self.PASSWORD, "finality_depth": 6},
        }, timeout_factor=timeout_factor)

    @property
    def url(self) -> str:
        return f"http://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.http_port}"

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli("tower", "status", "--json").stdout)
        return result

    def post(self, path: str, body: bytes | dict[str, Any] | list[Any], *,
             auth: tuple[str, str] | None = ("", "")) -> tuple[int, Any]:
        """POST to the plain HTTP port; ``auth=("", "")`` means the right credentials,
        None none at all. Returns (status, parsed JSON or text)."""
        import base64
        import urllib.error
        import urllib.request

        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method="POST", headers={"Content-Type": "application/json"})
        if auth is not None:
            user, password = auth if auth != ("", "") else (self.USER, self.PASSWORD)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def rpc(self, method: str, *params: Any) -> Any:
        status, reply = self.post("/", {"jsonrpc": "2.0", "id": "1", "method": method,
                                        "params": list(params)})
        assert status == 200, (status, reply)
        if "error" in reply:
            raise ElectrumError(reply["error"])
        return reply["result"]
