"""Data-version markers: new stores marked, forward steps run once each (and again only
for the step a crash interrupted), newer data refused untouched, the OLED page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.devices.pages import ErrorPage, render
from appliance.display.service import choose_page
from appliance.status import Phase, ServiceState, ServiceStatus
from appliance.update.dataversion import (
    MARKER,
    STORES,
    DataTooNew,
    DataVersionError,
    StoreSpec,
    check_service,
    ensure,
    read_marker,
)
from appliance.update.guard import DATA_TOO_NEW


def _marker(path: Path, version: int, store: str = "s") -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(json.dumps({"format": "hearth-data-version", "store": store,
                                           "version": version}))


def test_a_new_store_is_marked_with_the_current_version(tmp_path: Path) -> None:
    spec = StoreSpec("s", 3, {1: lambda p: pytest.fail("ran"), 2: lambda p: pytest.fail("ran")})
    assert ensure(spec, tmp_path / "new") == 3
    assert read_marker(tmp_path / "new") == 3
    assert (tmp_path / "new" / MARKER).stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as the box's USB agent runs")
def test_a_marker_written_by_root_belongs_to_the_directory_owner(tmp_path: Path) -> None:
    """On the image root's USB agent may mark the data directory first; the services
    (user hearth) must still read the marker, and rewrite it when they migrate."""
    store = tmp_path / "keys"
    store.mkdir()
    os.chown(store, 4321, 4321)
    spec = StoreSpec("keys", 1, {})
    assert ensure(spec, store) == 1
    marker = (store / MARKER).stat()
    assert (marker.st_uid, marker.st_gid) == (4321, 4321)


def test_unmarked_data_is_version_1_and_migrates_forward_once(tmp_path: Path) -> None:
    ran: list[tuple[int, int | None]] = []
    store = tmp_path / "s"
    store.mkdir()
    (store / "data").write_text("old format")

    def step(n: int) -> object:
        return lambda p: ran.append((n, read_marker(p)))

    spec = StoreSpec("s", 3, {1: step(1), 2: step(2)})  # type: ignore[dict-item]
    assert ensure(spec, store) == 1
    # each step saw the marker of the version it started from (none yet for the first)
    assert ran == [(1, None), (2, 2)]
    assert read_marker(store) == 3
    assert ensure(spec, store) == 3 and len(ran) == 2  # once: nothing runs again


def test_a_failed_step_leaves_the_last_completed_version_and_is_retried(tmp_path: Path) -> None:
    store = tmp_path / "s"
    _marker(store, 1)
    calls: list[int] = []

    def flaky(p: Path) -> None:
        calls.append(2)
        if calls.count(2) == 1:
            raise OSError("power cut")

    spec = StoreSpec("s", 3, {1: lambda p: calls.append(1), 2: flaky})
    with pytest.raises(DataVersionError, match="migration 2 -> 3 failed: power cut"):
        ensure(spec, store)
    assert read_marker(store) == 2 and calls == [1, 2]
    assert ensure(spec, store) == 2 and calls == [1, 2, 2]  # only the interrupted step again
    assert read_marker(store) == 3


def test_newer_data_is_refused_and_left_untouched(tmp_path: Path) -> None:
    store = tmp_path / "s"
    _marker(store, 5)
    (store / "data").write_text("from the future")
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    with pytest.raises(DataTooNew) as err:
        ensure(StoreSpec("tower", 2, {1: lambda p: None}), store)
    assert "Data from a newer Hearth" in str(err.value) and "version 5" in str(err.value)
    assert (err.value.store, err.value.found, err.value.known) == ("tower", 5, 2)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "other", "version": 1}',
                                  '{"format": "hearth-data-version", "version": "2"}',
                                  '{"format": "hearth-data-version", "version": 0}'])
def test_a_damaged_marker_is_an_error_not_a_guess(tmp_path: Path, text: str) -> None:
    (tmp_path / MARKER).write_text(text)
    with pytest.raises(DataVersionError, match="marker|unreadable"):
        ensure(StoreSpec("s", 1), tmp_path)
    assert (tmp_path / MARKER).read_text() == text


def test_a_spec_without_every_step_is_refused() -> None:
    with pytest.raises(ValueError, match="needs steps"):
        StoreSpec("s", 3, {1: lambda p: None})


def test_each_service_checks_the_stores_it_opens(tmp_path: Path) -> None:
    cfg = load_config(None, overrides={"hearth": {"data_dir": str(tmp_path)}})
    assert check_service("tower", cfg) == {"keys": 1, "tower": 1}
    assert check_service("indexer", cfg) == {"keys": 1, "pairing": 1, "index": 1}
    assert check_service("display", cfg) == {}
    for where in (tmp_path, tmp_path / "tower", tmp_path / "indexer", tmp_path / "indexer" / "index"):
        assert read_marker(where) == 1
    _marker(tmp_path / "backup", 2)
    with pytest.raises(DataTooNew, match="backup data is version 2"):
        check_service("backup", cfg)
    assert set(STORES) == {"keys", "pairing", "index", "tower", "backup"}


def test_the_oled_says_data_from_a_newer_hearth() -> None:
    status = ServiceStatus("tower", Phase.ERROR, detail="tower data v2 > v1",
                           counters={DATA_TOO_NEW: 1}, last_error="Data from a newer Hearth: ...")
    page, _, _ = choose_page({"tower": ServiceState(status, 0.5, False)}, None, 0.0)
    assert isinstance(page, ErrorPage) and page.title == "Newer Hearth data"
    assert page.detail.startswith("Data from a newer Hearth (tower data v2 > v1)")
    assert render(page).getbbox() is not None
