"""The install flow for real: ``rauc service`` with the box's slot layout on file-backed
ext4 slots and a custom boot backend, on a private D-Bus (framework/rauc.py), driven by
``appliance update install`` / ``status``. Only the reboot is a seam (it would reboot
this machine); the try boot and its health check are the image side's (QEMU tests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.cli import _parser
from appliance.config import Config, load_config
from appliance.update import cli as update_cli
from appliance.update.bundle import BundleInfo
from appliance.update.install import (
    InstallFailed,
    NotNewer,
    Offer,
    Progress,
    install,
    offer,
)
from appliance.update.release import running_version
from appliance.update.report import read_report
from functional.framework.rauc import (
    Key,
    RaucSystem,
    Reboots,
    can_install,
    make_bundle,
    next_version,
    running_system,
    two_keys,
)
from functional.framework.util import write_config

RUNNING = running_version()
NEXT = next_version(RUNNING)

pytestmark = pytest.mark.skipif(not can_install(), reason="needs rauc, root, loop devices, dbus")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Key, Key]:
    return two_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Key, Key]) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {v: make_bundle(base / f"hearth-{v}-arm64.raucb", keys[0], version=v)
            for v in ("0.1.0", "0.0.9", "0.1.1")} | {
        "foreign": make_bundle(base / "foreign.raucb", keys[1], version="0.1.2"),
        # for the CLI, which compares with what this tree is
        "running": make_bundle(base / f"hearth-{RUNNING}-arm64.raucb", keys[0], version=RUNNING),
        "next": make_bundle(base / f"hearth-{NEXT}-next-arm64.raucb", keys[0], version=NEXT)}


@pytest.fixture
def system(tmp_path: Path, keys: tuple[Key, Key], monkeypatch: pytest.MonkeyPatch) -> Iterator[RaucSystem]:
    yield from running_system(tmp_path / "rauc", keys[0].cert, monkeypatch)


@pytest.fixture
def cfg(tmp_path: Path, keys: tuple[Key, Key]) -> Config:
    return load_config(write_config(tmp_path / "hearth.toml", {
        "hearth": {"data_dir": tmp_path / "data", "run_dir": tmp_path / "run"},
        "update": {"keyring": keys[0].cert}}), env={})


def slot_release(slot: Path) -> str:
    out = subprocess.run(["debugfs", "-R", "cat /hearth-release", str(slot)], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_same_or_older_is_refused_unless_forced(cfg: Config, bundles: dict[str, Path]) -> None:
    with pytest.raises(NotNewer, match="the version running"):
        offer(bundles["0.1.0"], cfg.update, running="0.1.0")
    with pytest.raises(NotNewer, match="older than 0.1.0"):
        offer(bundles["0.0.9"], cfg.update, running="0.1.0")
    assert offer(bundles["0.0.9"], cfg.update, running="0.1.0", force=True).bundle.version == "0.0.9"
    assert offer(bundles["0.1.1"], cfg.update, running="0.1.0").question == "Update 0.1.0 -> 0.1.1?"


def test_install_writes_the_other_slot_with_progress(system: RaucSystem, cfg: Config,
                                                     bundles: dict[str, Path]) -> None:
    steps: list[Progress] = []
    install(offer(bundles["0.1.1"], cfg.update, running="0.1.0"), cfg.update, steps.append)
    percents = [s.percent for s in steps]
    assert percents == sorted(percents) and percents[-1] == 100, steps
    assert any("Copying image to rootfs.1" in s.step for s in steps), steps
    assert slot_release(system.slots["B"]) == "VERSION=0.1.1"
    assert "set-primary B" in system.calls()  # the backend was asked to try B next boot
    report = read_report("rauc", "0.1.0")
    assert (report.result, report.booted and report.booted.bootname) == ("pending", "A")
    assert report.line == "Update to 0.1.1 installed: reboot to finish"


def test_a_bundle_rauc_refuses_fails_cleanly(system: RaucSystem, cfg: Config,
                                             bundles: dict[str, Path]) -> None:
    # Past our own check (as if the keyring changed between check and install): the
    # service verifies again against its keyring and refuses; slot B is untouched.
    before = system.slots["B"].read_bytes()
    forged = Offer(BundleInfo(bundles["foreign"], "hearth-arm64", "0.1.2", ("rootfs",)), "0.1.0")
    with pytest.raises(InstallFailed, match="Install failed: .*signature"):
        install(forged, cfg.update)
    assert system.slots["B"].read_bytes() == before
    assert "set-primary B" not in system.calls()


def test_cli_install_then_rollback_is_reported(system: RaucSystem, cfg: Config,
                                               bundles: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def appliance(*argv: str, rebooter: Reboots | None = None) -> int:
        return update_cli.run(cfg, _parser().parse_args(["update", *argv]), rebooter=rebooter)

    reboots = Reboots()
    assert appliance("install", str(bundles["running"]), rebooter=reboots) == 1
    assert f"{RUNNING} is the version running: nothing to do" in capsys.readouterr().err
    assert appliance("install", str(bundles["foreign"]), rebooter=reboots) == 1
    assert "Bad signature" in capsys.readouterr().err
    assert reboots.count == 0 and system.calls().count("set-primary B") == 0

    assert appliance("install", str(bundles["next"]), rebooter=reboots) == 0
    out = capsys.readouterr().out
    assert f"Update {RUNNING} -> {NEXT}: {bundles['next'].name} verified" in out and "100% " in out
    assert reboots.count == 1
    assert appliance("status") == 0
    assert f"Update to {NEXT} installed: reboot to finish" in capsys.readouterr().out

    # The try boot of B failed its health check: the image side marked B bad and the
    # firmware booted A again. rauc's own status, after that "reboot", says so.
    system.stop()
    system.set_state("B", "bad")
    system.set_primary("A")
    system.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", system.env["DBUS_SYSTEM_BUS_ADDRESS"])
    report = read_report("rauc", RUNNING, booted_at=time.time() + 1)
    assert (report.result, report.rolled_back_to) == ("rolled-back", NEXT)
    assert report.other is not None and report.other.boot_status == "bad"
    assert report.line == f"Update to {NEXT} was rolled back"
