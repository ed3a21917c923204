"""The backup agent as a process: who may talk to it, bad input, quotas, kill -9, export,
and generic file pushes through appliance-client."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.backup.wire import encode_header
from appliance.client.backup import BackupClient, BackupRefused, BoxAddress
from appliance.control import control_request
from appliance.status import read_status_once
from appliance.transport.noise import Keypair
from appliance.transport.stream import STREAM_ERRORS, connect
from functional.framework.backup import BackupBox
from functional.framework.util import run_client, running

SID = "ab" * 32


@pytest.fixture
def box(tmp_path: Path, timeout_factor: float) -> Iterator[BackupBox]:
    yield from running(BackupBox(tmp_path / "box", quota_mib=1, timeout_factor=timeout_factor))


def addr(box: BackupBox) -> BoxAddress:
    return BoxAddress("127.0.0.1", box.port, box.key)


async def _open(box: BackupBox, key: Keypair) -> BackupClient:
    return await BackupClient.connect(addr(box), key)


async def _start_stream(c: BackupClient, sid: str = SID, version: int = 0) -> None:
    await c.request({"op": "snapshot", "stream": sid, "kind": "cln", "version": version}, b"snap")


def test_only_paired_keys_get_in_and_pairing_changes_apply_at_once(box: BackupBox) -> None:
    key = Keypair.generate()

    async def scenario() -> None:
        c = await _open(box, key)
        with pytest.raises(BackupRefused) as err:
            await c.request({"op": "hello"})
        assert err.value.code == "unpaired" and "not paired" in str(err.value)
        c.close()
        box.pair(key.public)  # the pairing gate writes the whitelist: no restart needed
        c = await _open(box, key)
        assert (await c.request({"op": "hello"}))["v"] == 1
        await _start_stream(c)
        box.revoke(key.public)
        with pytest.raises(BackupRefused) as err:  # same connection, next request
            await c.request({"op": "append", "stream": SID, "version": 1}, b"x")
        assert err.value.code == "unpaired"
        c.close()

    asyncio.run(scenario())
    assert box.status()["counters"]["refused"] == 2


def test_wrong_box_key_and_garbage_leave_the_server_serving(box: BackupBox) -> None:
    key = Keypair.generate()
    box.pair(key.public)

    async def scenario() -> None:
        with pytest.raises(STREAM_ERRORS):  # a client pinned to another box's key
            await BackupClient.connect(BoxAddress("127.0.0.1", box.port, Keypair.generate().public), key)
        with socket.create_connection(("127.0.0.1", box.port)) as s:  # not Noise at all
            s.sendall(secrets.token_bytes(200))
            s.settimeout(10)
            assert s.recv(100) == b""
        for junk in (b"\xff\xfe not json", b"[1, 2]", json.dumps({"op": "hello", "size": -1}).encode(),
                     b"{" + b" " * 5000 + b"}"):
            stream = await connect("127.0.0.1", box.port, key, box.key)
            await stream.send(junk)
            reply = json.loads(await stream.recv(timeout=10))
            assert reply["ok"] is False and reply["code"] == "bad-request"
            with pytest.raises(STREAM_ERRORS):
                await stream.recv(timeout=10)  # and the connection is closed
        c = await _open(box, key)
        with pytest.raises(BackupRefused) as err:
            await c.request({"op": "frobnicate"})
        assert err.value.code == "bad-request"
        with pytest.raises(BackupRefused):
            await c.request({"op": "info", "stream": "../../etc"})
        # a payload longer than announced breaks the framing: refused, connection closed
        stream = await connect("127.0.0.1", box.port, key, box.key)
        await stream.send(encode_header({"op": "append", "stream": SID, "version": 1, "size": 3}))
        await stream.send(b"too long")
        with pytest.raises((*STREAM_ERRORS, BackupRefused)):
            await BackupClient(stream, 10).reply()
        await _start_stream(c)
        assert (await c.request({"op": "append", "stream": SID, "version": 1}, b"ok"))["ok"]
        c.close()

    asyncio.run(scenario())


def test_quota_refuses_clearly_and_loses_nothing(box: BackupBox) -> None:
    key = Keypair.generate()
    box.pair(key.public)

    async def scenario() -> None:
        c = await _open(box, key)
        await _start_stream(c)
        chunk = secrets.token_bytes(100_000)
        version = 0
        with pytest.raises(BackupRefused) as err:
            for _ in range(20):
                await c.request({"op": "append", "stream": SID, "version": version + 1}, chunk)
                version += 1
        assert err.value.code == "quota" and "quota exceeded" in str(err.value)
        assert version == 10  # 1 MiB
        # a snapshot bigger than the whole quota is refused without reading it all
        with pytest.raises(BackupRefused):
            await c.request({"op": "snapshot", "stream": "cd" * 32, "kind": "cln", "version": 0},
                            secrets.token_bytes(1_100_000))
        c.close()
        c = await _open(box, key)
        data = await c.read(SID)
        assert [v for v, _ in data.records] == list(range(1, 11))
        assert all(blob == chunk for _, blob in data.records)
        # compaction frees the space: a fresh snapshot replaces the log
        await c.request({"op": "snapshot", "stream": SID, "kind": "cln", "version": 10}, b"small")
        assert (await c.request({"op": "append", "stream": SID, "version": 11}, chunk))["ok"]
        c.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_kill_9_mid_write_loses_no_acknowledged_write(box: BackupBox) -> None:
    key = Keypair.generate()
    box.pair(key.public)
    acked: dict[int, bytes] = {}
    stop = threading.Event()

    async def writer() -> None:
        c = await _open(box, key)
        await _start_stream(c)
        version = 0
        try:
            while not stop.is_set():
                payload = secrets.token_bytes(2000)
                await c.request({"op": "append", "stream": SID, "version": version + 1}, payload)
                version += 1
                acked[version] = payload
        except STREAM_ERRORS:
            pass  # the box died under us
        finally:
            c.close()

    async def big_upload() -> None:
        c = await _open(box, key)
        try:
            await c.request({"op": "snapshot", "stream": "ef" * 32, "kind": "cln", "version": 0},
                            secrets.token_bytes(600_000))
        except STREAM_ERRORS:
            pass
        finally:
            c.close()

    async def scenario() -> None:
        tasks = [asyncio.create_task(writer()), asyncio.create_task(big_upload())]
        await asyncio.sleep(0)
        while len(acked) < 200:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(box.kill9)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    box.start()

    stored = box.read_records(key, SID)
    assert len(acked) >= 200
    for version, payload in acked.items():
        assert stored[version] == payload, f"acknowledged write {version} lost"
    # at most the one in flight is there without an ack
    assert len(stored) - len(acked) in (0, 1)


def test_export_command_writes_a_consistent_0600_tar(box: BackupBox) -> None:
    key = Keypair.generate()
    box.pair(key.public)

    async def fill() -> None:
        c = await _open(box, key)
        await _start_stream(c)
        for v in range(1, 6):
            await c.request({"op": "append", "stream": SID, "version": v}, f"rec{v}".encode())
        c.close()

    asyncio.run(fill())
    # the status bus says what the display and `appliance status` show
    state = read_status_once(box.run_dir)["backup"]
    assert state.status is not None and state.status.phase == "ready"
    counters = state.status.counters
    assert counters["clients"] == 1 and counters["streams"] == 1 and counters["appends"] == 5
    assert counters["bytes"] > 0 and abs(counters["last_write"] - time.time()) < 60
    result = control_request(box.endpoint, "export", timeout=30)
    path = Path(result["path"])
    assert path == box.data_dir / "backup" / "export.bin"
    assert path.stat().st_mode & 0o777 == 0o600
    with tarfile.open(path) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["format"] == "hearth-backup-export"
        assert [s["stream"] for s in index["streams"]] == [SID]
        assert index["streams"][0]["version"] == 5
        log = tar.extractfile(f"streams/{SID}/log-0000000001").read()  # type: ignore[union-attr]
        assert b"rec5" in log
    # the operator's command does the same
    out = subprocess.run([str(Path(sys.executable).parent / "appliance"), "backup", "export",
                          "--config", str(box.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"1 streams exported to {path}" in out.stdout



def test_push_and_fetch_versioned_files(tmp_path: Path, box: BackupBox) -> None:
    state = box.client_state(tmp_path / "laptop", secrets.token_bytes(32))
    port = ["backup", "--port", str(box.port)]
    scb = tmp_path / "channel.backup"
    for i in range(4):
        scb.write_bytes(secrets.token_bytes(300) + bytes([i]))
        out = run_client(state, *port, "push", str(scb)).stdout
        assert f"version {i + 1} stored" in out
    run_client(state, *port, "fetch", "channel.backup", "--out", str(tmp_path / "got"))
    assert (tmp_path / "got").read_bytes() == scb.read_bytes()
    electrum = "channel_backup:" + secrets.token_hex(80)
    run_client(state, *port, "push", "-", "--name", "electrum-chan-1", stdin=electrum)
    run_client(state, *port, "fetch", "electrum-chan-1", "--out", str(tmp_path / "e"))
    assert (tmp_path / "e").read_text() == electrum
    listing = json.loads(run_client(state, *port, "list").stdout)
    assert sorted(s["kind"] for s in listing["streams"]) == ["file", "file"]
    assert max(len(s["generations"]) for s in listing["streams"]) == 3  # file_versions
    # another paired client can neither find nor read them
    other = box.client_state(tmp_path / "other", secrets.token_bytes(32))
    res = run_client(other, *port, "fetch", "channel.backup", "--out", str(tmp_path / "x"), check=False)
    assert res.returncode == 1 and "no stream" in res.stderr
    for path in (box.data_dir / "backup").rglob("*"):
        if path.is_file():
            assert electrum.encode() not in path.read_bytes()


def test_unreachable_box_is_a_clear_error(tmp_path: Path, box: BackupBox) -> None:
    state = box.client_state(tmp_path / "laptop", secrets.token_bytes(32))
    box.stop()
    res = run_client(state, "backup", "--port", str(box.port), "list", check=False)
    assert res.returncode == 1 and "unreachable" in res.stderr


def test_carried_snapshot_over_the_wire_keeps_writes_made_during_the_upload(box: BackupBox) -> None:
    key = Keypair.generate()
    box.pair(key.public)

    async def scenario() -> None:
        writer = await _open(box, key)
        await _start_stream(writer)
        for v in range(1, 6):
            await writer.request({"op": "append", "stream": SID, "version": v}, f"r{v}".encode())
        compactor = await connect("127.0.0.1", box.port, key, box.key)
        snapshot = b"db@3" * 50_000  # 200 kB: several Noise messages
        await compactor.send(encode_header({"op": "snapshot", "stream": SID, "kind": "cln",
                                            "version": 3, "carry": True, "size": len(snapshot)}))
        await compactor.send(snapshot[:60_000])
        await writer.request({"op": "append", "stream": SID, "version": 6}, b"r6")  # meanwhile
        for i in range(60_000, len(snapshot), 60_000):
            await compactor.send(snapshot[i:i + 60_000])
        reply = await BackupClient(compactor, 10).reply()
        assert reply["generation"] == 2
        compactor.close()
        data = await writer.read(SID)
        assert data.snapshot_version == 3 and data.snapshot == snapshot
        assert data.records == [(4, b"r4"), (5, b"r5"), (6, b"r6")]
        writer.close()

    asyncio.run(scenario())
