"""The backup agent on a really full disk: explicit refusals, nothing acknowledged lost.

The agent's data directory is a small tmpfs; a filler file takes the last byte. A push
then gets a ``disk-full`` refusal that appliance-client prints as such (issue 12 saw
"box unreachable... connection reset"), the agent keeps serving, shows the state on its
status, and after the space comes back (and a kill -9) every acknowledged record is there.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.client.backup import BackupClient, BackupRefused, BoxAddress
from appliance.status import read_status_once
from appliance.transport.noise import Keypair
from functional.framework.backup import BackupBox
from functional.framework.disk import SmallDisk, small_disk
from functional.framework.util import CLIENT, wait_until

SID = "cd" * 32


@pytest.fixture
def full_box(tmp_path: Path, timeout_factor: float) -> Iterator[tuple[BackupBox, SmallDisk]]:
    box = BackupBox(tmp_path / "box", quota_mib=64, timeout_factor=timeout_factor)
    with small_disk(box.data_dir / "backup", 8) as disk:
        box.start()
        try:
            yield box, disk
        finally:
            box.stop()


def test_full_disk_refuses_explicitly_and_loses_nothing(tmp_path: Path,
                                                        full_box: tuple[BackupBox, SmallDisk]) -> None:
    box, disk = full_box
    key = Keypair.generate()
    box.pair(key.public)
    acked: dict[int, bytes] = {}
    refused: list[str] = []

    async def write(c: BackupClient, version: int) -> None:
        record = secrets.token_bytes(3000)
        try:
            await c.request({"op": "append", "stream": SID, "version": version}, record)
        except BackupRefused as exc:
            refused.append(exc.code)
        else:
            acked[version] = record

    async def before_and_during() -> None:
        c = await BackupClient.connect(BoxAddress("127.0.0.1", box.port, box.key), key)
        await c.request({"op": "snapshot", "stream": SID, "kind": "cln", "version": 0}, b"s")
        for v in range(1, 11):
            await write(c, v)
        disk.fill()
        v = 11
        while not refused:  # the last page of the log may take a record or two
            await write(c, v)
            v += 1
        # Same connection, still in step: a snapshot refused mid-upload is read to its end.
        with pytest.raises(BackupRefused) as err:
            await c.request({"op": "snapshot", "stream": SID, "kind": "cln", "version": v - 1,
                             "takeover": True}, secrets.token_bytes(200_000))
        assert err.value.code == "disk-full" and "disk is full" in str(err.value)
        assert (await c.request({"op": "hello"}))["v"] == 1
        c.close()

    asyncio.run(before_and_during())
    assert set(refused) == {"disk-full"}
    st = read_status_once(box.run_dir, timeout=5)["backup"].status
    assert st is not None and st.counters["disk_full"] == 1 and st.counters["disk_full_refused"] >= 2
    assert st.last_error and "disk is full" in st.last_error

    # The owner's tool says what happened, not "unreachable".
    state = box.client_state(tmp_path / "laptop", secrets.token_bytes(32))
    scb = tmp_path / "channel.backup"
    scb.write_bytes(secrets.token_bytes(5000))
    res = subprocess.run([CLIENT, "--state-dir", str(state), "backup", "--port", str(box.port),
                          "push", str(scb)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "the box's disk is full" in res.stderr, res.stderr
    assert "unreachable" not in res.stderr

    disk.release()
    wait_until(lambda: read_status_once(box.run_dir, timeout=2)["backup"].status.counters[  # type: ignore[union-attr]
        "disk_full"] == 0, timeout=30, factor=box.factor)
    version = max(acked)

    async def after() -> None:
        c = await BackupClient.connect(BoxAddress("127.0.0.1", box.port, box.key), key)
        for v in range(version + 1, version + 6):
            await write(c, v)
        c.close()

    asyncio.run(after())
    box.kill9()
    box.start()

    stored = box.read_records(key, SID)
    assert len(acked) >= 15
    for v, record in acked.items():
        assert stored.get(v) == record, f"acknowledged record {v} lost"
