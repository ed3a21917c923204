"""The tower's durability contract on a real full disk (a small tmpfs), with kill -9.

Issue 12's reproduction: appointments acknowledged while and after the disk was full
must all be readable after a kill -9, the counters must equal what is stored, and a full
disk must be answered with an explicit error (TEOS code 32 / HTTP 507, JSON-RPC -32001).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from coincurve import PrivateKey
from functional.framework.disk import small_disk

from appliance.durability import DiskFull
from appliance.tower.api import DISK_FULL_RPC, SERVICE_UNAVAILABLE, TeosError, TowerAPI, TowerLimits
from appliance.tower.store import TowerStore

from .test_api import _appointment

# The writer runs in its own process so that it can be killed -9 after its acks.
_WRITER = textwrap.dedent("""
    import json, os, sys
    from coincurve import PrivateKey
    sys.path.insert(0, sys.argv[2])
    from appliance.durability import DiskFull
    from appliance.tower.api import TeosError, TowerAPI, TowerLimits
    from appliance.tower.store import TowerStore
    from appliance.tower.crypto import encrypt_blob, locator_of, sign_message
    from functional.framework.disk import SmallDisk

    def _appointment(key, txid, penalty, delay=144):
        locator, blob = locator_of(txid), encrypt_blob(penalty, txid)
        sig = sign_message(locator + blob + delay.to_bytes(4, "big"), key)
        return json.dumps({"appointment": {"locator": locator.hex(), "encrypted_blob": blob.hex(),
                                           "to_self_delay": delay}, "signature": sig}).encode(), sig

    disk = SmallDisk(__import__("pathlib").Path(sys.argv[1]))
    store = TowerStore(disk.path / "db")
    user = PrivateKey()
    api = TowerAPI(store, PrivateKey(), lambda: 100, TowerLimits(slots=1000))
    api.register(json.dumps({"user_id": user.public_key.format().hex()}).encode())
    acked, refused = [], {}

    def add(n):
        body, _ = _appointment(user, os.urandom(32), os.urandom(600))
        try:
            acked.append(api.add_appointment(body)["locator"])
        except TeosError as exc:
            key = f"{exc.status}/{exc.code}"
            refused[key] = refused.get(key, 0) + 1

    for n in range(20):
        add(n)
    disk.fill(leave=3000)  # a little room: some writes land, some are cut mid-record
    for n in range(20):
        add(n)
    disk.release()
    for n in range(40):
        add(n)
    print(json.dumps({"acked": acked, "refused": refused, "counters": store.counters,
                      "stored": store.stored_counts()}), flush=True)
    sys.stdin.read()  # until killed
""")


def test_acknowledged_appointments_survive_a_full_disk_and_kill_9(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        root = Path(__file__).resolve().parents[2]
        with subprocess.Popen([sys.executable, "-c", _WRITER, str(disk.path), str(root)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            os.kill(proc.pid, signal.SIGKILL)  # no close, no flush: a power cut
            proc.wait()
        assert line, "the writer died before reporting"
        report = json.loads(line)
        # The disk really was full for a while, and the tower said so explicitly.
        assert report["refused"] and set(report["refused"]) == {f"507/{SERVICE_UNAVAILABLE}"}
        assert report["counters"]["appointments"] == report["stored"]["appointments"]
        assert len(report["acked"]) == report["stored"]["appointments"] >= 60
        store = TowerStore(disk.path / "db")
        try:
            stored = {key[1:17].hex() for key, _ in store.db.iterator(prefix=b"a")}
            assert set(report["acked"]) <= stored  # nothing acknowledged is lost
            assert store.counters == {**report["counters"]}
            for name, count in store.stored_counts().items():
                assert store.counters[name] == count, name
        finally:
            store.close()


def test_full_disk_is_an_explicit_error_and_memory_agrees(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        store = TowerStore(disk.path / "db")
        api = TowerAPI(store, PrivateKey(), lambda: 100, TowerLimits(slots=1000),
                       on_failed=lambda exc: failures.append(exc))
        failures: list[OSError] = []
        user = PrivateKey()
        api.register(json.dumps({"user_id": user.public_key.format().hex()}).encode())
        disk.fill()
        refusal: TeosError | None = None
        for _ in range(20):  # the log's last page may still hold a record or two
            body, _sig = _appointment(user, os.urandom(32), os.urandom(1500))
            before = dict(store.counters)
            try:
                api.add_appointment(body)
            except TeosError as exc:
                refusal = exc
                break
        assert refusal is not None, "appointments were acknowledged on a full disk"
        assert (refusal.status, refusal.code) == (507, SERVICE_UNAVAILABLE)
        assert "disk is full" in refusal.message
        assert store.counters == before
        assert before["appointments"] == store.stored_counts()["appointments"]
        assert failures and isinstance(failures[-1], DiskFull)
        reply = api.electrum_rpc(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "get_ctn",
                                             "params": ["11" * 32 + ":0", "bcrt1qexample000000"]
                                             }).encode())
        assert reply["error"]["code"] == DISK_FULL_RPC and "disk is full" in reply["error"]["message"]
        assert store.recover() is False  # still full: refused quickly, reads go on
        assert store.user(user.public_key.format()) is not None
        disk.release()
        assert store.recover() is True
        assert api.add_appointment(body)["locator"]
        assert store.counters["appointments"] == before["appointments"] + 1
        assert store.counters["appointments"] == store.stored_counts()["appointments"]
        store.close()
