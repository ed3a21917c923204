"""The steady-dbcache rewrite keeps bitcoin.conf readable by bitcoind (mode and group)."""

from __future__ import annotations

import asyncio
import grp
import os
from pathlib import Path
from typing import Any

import pytest

from appliance.node.bitcoin_conf import IBD_MARKER
from appliance.node.ibd_mode import apply_steady_dbcache, replace_keeping_access


def other_group() -> int:
    """A group that is not this process's, so keeping it is not an accident."""
    mine = os.getgid()
    for name in ("nogroup", "daemon", "users", "bin"):
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            continue
        if gid != mine and (os.geteuid() == 0 or gid in os.getgroups()):
            return gid
    pytest.fail("no second group to test with (run as root or in a supplementary group)")


def test_replace_keeps_mode_and_group(tmp_path: Path) -> None:
    conf = tmp_path / "bitcoin.conf"
    conf.write_text("old\n")
    gid = other_group()
    os.chown(conf, -1, gid)
    conf.chmod(0o640)
    replace_keeping_access(conf, b"new\n")
    st = conf.stat()
    assert (conf.read_text(), st.st_mode & 0o7777, st.st_gid) == ("new\n", 0o640, gid)
    assert [p.name for p in tmp_path.iterdir()] == ["bitcoin.conf"]  # no temp file left


class FakeSupervisor:
    """Records the XML-RPC calls the rewrite makes (supervisord itself: functional test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def stopProcess(self, name: str, wait: bool) -> bool:  # noqa: N802 - XML-RPC name
        self.calls.append(("stop", name, wait))
        return True

    def startProcess(self, name: str, wait: bool) -> bool:  # noqa: N802
        self.calls.append(("start", name, wait))
        return True


def test_apply_steady_dbcache_rewrites_once_and_restarts(tmp_path: Path) -> None:
    conf = tmp_path / "bitcoin.conf"
    conf.write_text(f"{IBD_MARKER}128  (note)\n\n[regtest]\ndbcache=512\n")
    conf.chmod(0o640)
    sup = FakeSupervisor()
    said = asyncio.run(apply_steady_dbcache(conf, rpc=lambda: sup))
    assert said == "dbcache=128, bitcoind restarted"
    assert sup.calls == [("stop", "bitcoind", True), ("start", "bitcoind", True)]
    assert "dbcache=128" in conf.read_text() and conf.stat().st_mode & 0o7777 == 0o640
    assert asyncio.run(apply_steady_dbcache(conf, rpc=lambda: sup)) == "already steady"
    assert len(sup.calls) == 2
