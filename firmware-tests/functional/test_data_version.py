"""A real service process on data from a newer Hearth (what an A/B rollback leaves): it
refuses the store, says so on the status bus (the OLED's "Newer Hearth data" page),
opens nothing and changes nothing, and stays up until stopped; on data it knows it
marks every store it opens and serves."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.control import ControlError, control_request
from appliance.devices.pages import ErrorPage
from appliance.display.service import choose_page
from appliance.status import Phase, read_status_once
from appliance.update.dataversion import MARKER, read_marker
from appliance.update.guard import DATA_TOO_NEW
from functional.framework.backup import BackupBox
from functional.framework.util import APPLIANCE, stop_process, wait_until


@pytest.fixture
def box(tmp_path: Path, timeout_factor: float) -> Iterator[BackupBox]:
    b = BackupBox(tmp_path / "box", timeout_factor=timeout_factor)
    yield b
    b.stop()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_backup_service_refuses_a_newer_store_and_serves_a_known_one(
        box: BackupBox, timeout_factor: float) -> None:
    box.start()
    assert box.status()["port"]
    box.stop()
    store = box.data_dir / "backup"
    assert read_marker(store) == 1 and read_marker(box.data_dir) == 1
    # What a newer Hearth leaves after migrating the store, then being rolled back.
    (store / MARKER).write_text(json.dumps({"format": "hearth-data-version", "store": "backup",
                                            "version": 2}))
    (store / "written-by-v2").write_bytes(b"a format this code does not know")
    before = _tree(box.data_dir)
    log = open(box.log_path, "ab")
    proc = subprocess.Popen([APPLIANCE, "run", "backup", "--config", str(box.config)],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        def refused() -> bool:
            assert proc.poll() is None, box.log_path.read_text()[-2000:]
            st = read_status_once(box.run_dir).get("backup")
            return bool(st and st.status and st.status.phase == Phase.ERROR)

        wait_until(refused, timeout=30, factor=timeout_factor, interval=0.5)
        state = read_status_once(box.run_dir)["backup"]
        assert state.status is not None
        assert state.status.counters[DATA_TOO_NEW] == 1
        assert "Data from a newer Hearth" in (state.status.last_error or "")
        page, _, _ = choose_page({"backup": state}, None, 0.0)
        assert isinstance(page, ErrorPage) and "newer Hearth" in page.detail
        with pytest.raises(ControlError):  # no control socket answers ...
            control_request(box.endpoint, "status", timeout=2)
        with pytest.raises(OSError):  # ... and its port is not listening
            socket.create_connection(("127.0.0.1", box.port), timeout=2).close()
        assert proc.poll() is None  # up, so supervisord does not restart it in a loop
        assert _tree(box.data_dir) == before
        assert "Data from a newer Hearth: backup data is version 2" in box.log_path.read_text()
    finally:
        stop_process(proc)
    assert proc.returncode == 0
    assert _tree(box.data_dir) == before
