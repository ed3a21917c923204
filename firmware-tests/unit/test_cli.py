"""The appliance command: version, config errors, sub-commands take --config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import appliance
from appliance.cli import main
from appliance.config import dump_toml


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert appliance.__version__ in capsys.readouterr().out


def test_console_script_installed() -> None:
    exe = Path(sys.executable).parent / "appliance"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"hearth {appliance.__version__}"


@pytest.mark.parametrize("command", [["run", "node"], ["status"], ["config", "check"]])
def test_bad_config_is_reported_not_raised(tmp_path: Path, command: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "hearth.toml"
    cfg.write_text("[node]\nprune_mib = 7\n")
    assert main([*command, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "node.prune_mib" in err and "Traceback" not in err


def test_unknown_service_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "nosuch", "--config", "/dev/null"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "hearth.toml"
    cfg.write_text('[hearth]\nnetwork = "signet"\n')
    assert main(["config", "check", "--config", str(cfg)]) == 0
    assert "ok (signet)" in capsys.readouterr().out


def test_backup_commands_say_when_the_service_is_down(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "hearth.toml"
    cfg.write_text(dump_toml({"hearth": {"run_dir": tmp_path / "run"}}))
    for command in ("status", "export"):
        assert main(["backup", command, "--config", str(cfg)]) == 1
        assert "not running" in capsys.readouterr().err
