"""The Core Lightning plugin: every database transaction reaches the box before it commits.

Install (its own virtualenv: pyln-client pins another coincurve than the appliance)::

    python3 -m venv ~/.hearth-cln
    ~/.hearth-cln/bin/pip install pyln-client==26.6
    ~/.hearth-cln/bin/pip install --no-deps hearth-appliance
    appliance-client backup setup-cln --hsm-secret ~/.lightning/bitcoin/hsm_secret \\
        --db ~/.lightning/bitcoin/lightningd.sqlite3
    lightningd --plugin=$HOME/.hearth-cln/bin/hearth-cln-backup

``db_write`` arrives before ``init`` (so before any plugin option), hence the settings
come from ``<state dir>/cln-backup.json`` written by ``setup-cln`` (state dir:
``$HEARTH_CLIENT_STATE`` or ``~/.config/hearth-client``). data_version rules (the
lightningd hook documentation, as cldcb applies them):

* ``v == last + 1`` (mod 2^32): append the batch to the log;
* ``v == last``: the previous batch never committed; the append replaces it;
* anything else, or no backup yet: upload a snapshot of the committed database (state
  ``v - 1``) and the batch, pipelined: one round trip plus the upload.

When the box says the log outgrew the snapshot (``snapshot_wanted``), a background
thread takes a snapshot on its own connection, labelled with the data_version read from
that copy, and the box carries the records after it into the new generation; the hook
keeps appending meanwhile, so compaction never holds lightningd up.

``continue`` is answered only after the box acknowledged (fsynced) the batch. If the
box cannot be reached within ``retry_s`` (default 60 s) or refuses (quota), the plugin
answers an error, and lightningd stops without committing: running on without a
backup is the one thing this plugin must never do silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..transport.noise import Keypair
from .backup import GONE, BackupClient, BackupRefused, BoxAddress
from .cln import seal_change, seal_snapshot, snapshot_database, snapshot_with_version

__all__ = ["ClnBackup", "PluginSettings", "main"]

_U32 = 1 << 32
_COMPACT_ERRORS: tuple[type[BaseException], ...] = (*GONE, BackupRefused, ValueError)
CONFIG_NAME = "cln-backup.json"


def state_dir() -> Path:
    env = os.environ.get("HEARTH_CLIENT_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hearth-client"


@dataclass(frozen=True)
class PluginSettings:
    db: Path
    node_id: bytes
    stream: str
    box: BoxAddress
    key: Keypair
    retry_s: float = 60.0

    @classmethod
    def load(cls, state: Path) -> PluginSettings:
        path = state / CONFIG_NAME
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            raise RuntimeError(f"no {path}: run appliance-client backup setup-cln") from None
        box = cfg["box"]
        return cls(Path(cfg["db"]), bytes.fromhex(cfg["node_id"]), cfg["stream"],
                   BoxAddress(box["host"], int(box["port"]), bytes.fromhex(box["key"])),
                   Keypair((state / "client_key").read_bytes()), float(cfg.get("retry_s", 60.0)))


class ClnBackup:
    """The hook's logic, independent of pyln-client (tests and benchmarks drive it too)."""

    def __init__(self, settings: PluginSettings, log: Callable[[str], None] = lambda m: None) -> None:
        self.s = settings
        self.log = log
        self.loop = asyncio.new_event_loop()
        self.client: BackupClient | None = None
        self.version: int | None = None  # the box's last acknowledged version
        self.need_snapshot = False  # no stream yet, or another client key owns it
        self.stats = {"appends": 0, "snapshots": 0, "reconnects": 0, "compactions": 0,
                      "compactions_failed": 0}
        self._compactor: threading.Thread | None = None

    def close(self) -> None:
        if self._compactor is not None:
            self._compactor.join()
        if self.client is not None:
            self.client.close()
        self.loop.close()

    def db_write(self, data_version: int, writes: list[str]) -> None:
        """Back up one batch; returns once the box acknowledged it, else raises."""
        deadline = time.monotonic() + self.s.retry_s
        delay = 0.2
        while True:
            try:
                self.loop.run_until_complete(self._write(data_version, writes))
                return
            except GONE as exc:
                if self.client is not None:
                    self.client.stream.abort()
                self.client, self.version = None, None
                if time.monotonic() + delay > deadline:
                    raise RuntimeError(f"backup box unreachable for {self.s.retry_s:.0f} s: {exc}") from None
                self.log(f"backup box unreachable ({exc}); retrying")
                self.stats["reconnects"] += 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, dv: int, writes: list[str]) -> None:
        if self.client is None:
            self.client = await BackupClient.connect(self.s.box, self.s.key)
        if self.version is None:
            info = await self.client.request({"op": "info", "stream": self.s.stream})
            self.version = int(info["version"]) if info["exists"] else None
            self.need_snapshot = not info["exists"] or info.get("owner") != self.s.key.public.hex()
        last = self.version
        if last is not None and not self.need_snapshot and dv in (last, (last + 1) % _U32):
            change = seal_change(self.s.node_id, self.s.stream, dv, writes)
            try:
                reply = await self.client.request(
                    {"op": "append", "stream": self.s.stream, "version": dv}, change)
            except BackupRefused as exc:
                if exc.code != "gap":
                    raise
                reply = await self._snapshot(dv, writes)  # the box's state moved: start afresh
            else:
                self.stats["appends"] += 1
        else:
            reply = await self._snapshot(dv, writes)
        self.version = dv
        self.need_snapshot = False
        if reply.get("snapshot_wanted"):
            self._start_compaction()

    def _start_compaction(self) -> None:
        if self._compactor is not None and self._compactor.is_alive():
            return
        self._compactor = threading.Thread(target=self._compact, name="hearth-compact", daemon=True)
        self._compactor.start()

    def _compact(self) -> None:
        """A fresh snapshot in the background (own event loop, own connection)."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._compact_async())
            self.stats["compactions"] += 1
        except _COMPACT_ERRORS as exc:
            # Harmless: the log stays valid, and the next append asks again.
            self.stats["compactions_failed"] += 1
            self.log(f"background compaction skipped: {exc}")
        finally:
            loop.close()

    async def _compact_async(self) -> None:
        database, version = snapshot_with_version(self.s.db)
        if version is None:
            raise ValueError("the database has no data_version yet")
        blob = seal_snapshot(self.s.node_id, self.s.stream, version, database)
        client = await BackupClient.connect(self.s.box, self.s.key)
        try:
            await client.request({"op": "snapshot", "stream": self.s.stream, "kind": "cln",
                                  "version": version, "carry": True}, blob)
        finally:
            client.close()
        self.log(f"compacted: snapshot at data_version {version} ({len(database)} bytes)")

    async def _snapshot(self, dv: int, writes: list[str]) -> dict[str, Any]:
        assert self.client is not None
        base = (dv - 1) % _U32  # the hook runs before commit: the file holds state dv - 1
        database = await asyncio.to_thread(snapshot_database, self.s.db)
        snap = seal_snapshot(self.s.node_id, self.s.stream, base, database)
        change = seal_change(self.s.node_id, self.s.stream, dv, writes)
        _, reply = await self.client.pipeline([
            ({"op": "snapshot", "stream": self.s.stream, "kind": "cln", "version": base,
              "takeover": True}, snap),
            ({"op": "append", "stream": self.s.stream, "version": dv}, change)])
        self.stats["snapshots"] += 1
        self.log(f"uploaded a snapshot at data_version {base} ({len(database)} bytes)")
        return reply


def main() -> None:
    from pyln.client import Plugin  # only in the plugin's own venv

    plugin = Plugin()
    holder: dict[str, ClnBackup] = {}

    @plugin.hook("db_write")  # type: ignore[untyped-decorator]
    def on_db_write(plugin: Any, writes: list[str], data_version: int, **kwargs: Any) -> dict[str, Any]:
        try:
            if "b" not in holder:
                holder["b"] = ClnBackup(PluginSettings.load(state_dir()),
                                        lambda m: plugin.log(m, level="info"))
            holder["b"].db_write(int(data_version), list(writes))
        except (BackupRefused, RuntimeError, OSError, ValueError, KeyError) as exc:
            # Anything but "continue" makes lightningd stop without committing.
            plugin.log(f"hearth backup FAILED at data_version {data_version}: {exc}", level="broken")
            return {"result": "fail", "error": str(exc)}
        return {"result": "continue"}

    @plugin.init()  # type: ignore[untyped-decorator]
    def init(options: Any, configuration: Any, plugin: Any, **kwargs: Any) -> None:
        plugin.log(f"hearth backup plugin ready (state {state_dir()})")

    plugin.run()


if __name__ == "__main__":
    main()
