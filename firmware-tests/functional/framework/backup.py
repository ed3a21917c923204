"""The backup agent as a real process, and lightningd's side of the db_write hook.

``BackupBox`` runs ``appliance run backup`` (as supervisord does) on a free port with
its own data and run directories; it pairs client keys by writing the pairing
whitelist file the indexer owns on the box.

``Lightningd`` plays lightningd against a real sqlite database and a real plugin
process speaking plugin JSON-RPC over stdio: ``getmanifest``, then (possibly before
``init``) the ``db_write`` hook for every transaction, sent after the statements ran
inside an open transaction and before COMMIT, exactly as lightningd's db layer does;
COMMIT only if the plugin answered ``continue``, else the node "halts" (rollback).
Each write carries lightningd's own data_version bump statement, and the hook's
data_version is the u32 of the stored counter, so it wraps at 2^32.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from appliance.control import ControlError, control_request
from appliance.identity import derive_secp256k1, load_or_create_hsm_secret
from appliance.pairing.store import Whitelist

from .util import APPLIANCE, free_port, hearth_section, stop_process, wait_until, write_config

__all__ = ["INTEROP_PYTHON", "REPO", "BackupBox", "Lightningd", "PluginHalted", "dump_database"]

REPO = Path(__file__).resolve().parents[3]
INTEROP_PYTHON = REPO / ".cache" / "venv-interop" / "bin" / "python"


class BackupBox:
    def __init__(self, root: Path, *, quota_mib: int = 64, compact_min_kib: int = 1024,
                 timeout_factor: float = 1.0) -> None:
        self.root = root
        self.port = free_port()
        self.factor = timeout_factor
        self.data_dir = root / "data"
        self.run_dir = root / "run"
        self.config = root / "hearth.toml"
        self.log_path = root / "backup.log"
        root.mkdir(parents=True, exist_ok=True)
        write_config(self.config, {
            "hearth": hearth_section(root),
            "backup": {"port": self.port, "bind": "127.0.0.1", "quota_mib": quota_mib,
                       "compact_min_kib": compact_min_kib}})
        secret = load_or_create_hsm_secret(self.data_dir / "hsm_secret")
        self.key = derive_secp256k1(secret, "noise-static").public
        self.whitelist = Whitelist(self.data_dir / "indexer" / "paired-clients.json")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.run_dir / 'backup.ctl'}"

    def pair(self, pubkey: bytes, label: str = "test") -> None:
        self.whitelist.add(pubkey, label)

    def revoke(self, pubkey: bytes) -> None:
        self.whitelist.revoke(pubkey)

    def client_state(self, state: Path, key: bytes) -> Path:
        """A paired appliance-client state directory (client_key + box.json)."""
        from appliance.identity import write_secret_file
        from appliance.transport.noise import Keypair

        write_secret_file(state / "client_key", key)
        (state / "box.json").write_text(json.dumps({"key": self.key.hex(), "host": "127.0.0.1",
                                                    "port": 1}))
        self.pair(Keypair(key).public)
        return state

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([APPLIANCE, "run", "backup", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._ready, timeout=30, factor=self.factor)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"backup service exited {self.proc.returncode}:\n"
                                 + self.log_path.read_text()[-3000:])
        try:
            return bool(control_request(self.endpoint, "status", timeout=2)["port"])
        except ControlError:
            return False

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = control_request(self.endpoint, "status", timeout=10)
        return result

    def read_records(self, key: Any, sid: str) -> dict[int, bytes]:
        """Every record of stream ``sid`` as the box returns it now (version -> bytes)."""
        from appliance.client.backup import BackupClient, BoxAddress

        async def read() -> dict[int, bytes]:
            c = await BackupClient.connect(BoxAddress("127.0.0.1", self.port, self.key), key)
            try:
                return dict((await c.read(sid)).records)
            finally:
                c.close()
        return asyncio.run(read())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)


class PluginHalted(Exception):
    """The plugin answered db_write with something other than continue: lightningd stops."""


_U32 = 1 << 32


class Lightningd:
    def __init__(self, db: Path, state: Path, *, timeout: float = 60.0) -> None:
        self.db_path = db
        self.state = state
        self.timeout = timeout
        self.db = sqlite3.connect(db, isolation_level=None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._id = 0
        self.logs: list[str] = []
        self.initialized = False

    # --- the plugin process -------------------------------------------------------------------
    def start_plugin(self, *, init: bool = True) -> dict[str, Any]:
        # lightningd sets LIGHTNINGD_PLUGIN; pyln-client prints its usage text without it.
        env = {**os.environ, "PYTHONPATH": str(REPO), "HEARTH_CLIENT_STATE": str(self.state),
               "LIGHTNINGD_PLUGIN": "1", "LIGHTNINGD_VERSION": "v26.06"}
        self.proc = subprocess.Popen([str(INTEROP_PYTHON), "-m", "appliance.client.cln_plugin"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=self.db_path.parent)
        manifest = self.call("getmanifest", {"allow-deprecated-apis": False})
        if init:
            self.init()
        return manifest

    def init(self) -> None:
        self.call("init", {"options": {}, "configuration": {
            "lightning-dir": str(self.db_path.parent), "rpc-file": "lightning-rpc",
            "startup": True, "network": "regtest", "feature_set": {}}})
        self.initialized = True

    def stop_plugin(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # lightningd closes the pipe; the plugin exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None
            self.initialized = False

    def call(self, method: str, params: dict[str, Any]) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self._id += 1
        rid = self._id
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                          "params": params}).encode() + b"\n\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("method") == "log":
                self.logs.append(str(msg["params"].get("message")))
                continue
            if msg.get("id") != rid:
                continue
            if "error" in msg:
                raise PluginHalted(json.dumps(msg["error"]))
            return msg["result"]

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            # pyln-client ends each JSON message with a blank line
            text = self._buf.lstrip()
            if text:
                try:
                    msg, end = json.JSONDecoder().raw_decode(text.decode())
                except ValueError:
                    pass
                else:
                    self._buf = text.decode()[end:].encode()
                    return dict(msg)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the plugin did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise PluginHalted("the plugin exited")
                self._buf += chunk

    # --- the database --------------------------------------------------------------------------
    def data_version(self) -> int:
        row = self.db.execute("SELECT intval FROM vars WHERE name = 'data_version'").fetchone()
        return int(row[0]) if row else 0

    def transaction(self, statements: list[str], *, commit: bool = True, hook: bool = True) -> int:
        """Run one transaction the way lightningd's db layer does; returns its data_version."""
        old = self.data_version()
        writes = [*statements,
                  f"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = {old}"]
        self.db.execute("BEGIN")
        try:
            for sql in writes:
                self.db.execute(sql)
            dv = (old + 1) % _U32
            if hook:
                result = self.call("db_write", {"data_version": dv, "writes": writes})
                if result != {"result": "continue"}:
                    raise PluginHalted(json.dumps(result))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT" if commit else "ROLLBACK")
        return dv

    def close(self) -> None:
        self.stop_plugin()
        self.db.close()


def dump_database(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in rowid order, and the schema: for row-for-row comparison."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {
            "__schema__": conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            out[name] = conn.execute(f'SELECT rowid, * FROM "{name}" ORDER BY rowid').fetchall()
        return out
    finally:
        conn.close()
