"""First-boot settings: the user's hearth.toml merged over the image's, key by key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appliance.boot.config_merge import MergeError, merge_config_files, merge_toml, toml_value
from appliance.config import load_config

REPO = Path(__file__).resolve().parents[3]
FIRSTBOOT_SETUP = REPO / "rootfs-overlay/usr/local/lib/hearth/firstboot_setup.py"


def image_toml() -> str:
    """The image's /etc/hearth/hearth.toml as image/customize-tree leaves it."""
    text = (REPO / "rootfs-overlay/etc/hearth/hearth.toml").read_text()
    assert "#auto_size = false\n" in text
    return text.replace("#auto_size = false\n", "auto_size = true\n")


def test_image_defaults_hold_for_keys_the_user_did_not_set() -> None:
    user = '[hearth]\nnetwork = "regtest"\n\n[display]\nsimulate = true\nframes_dir = "/x"\n'
    merged = merge_toml(image_toml(), user)
    data = tomllib.loads(merged)
    assert data["node"]["auto_size"] is True  # the image's sizing survives the user's file
    assert data["hearth"]["network"] == "regtest"
    assert data["display"] == {"simulate": True, "frames_dir": "/x"}
    # The image's comments (the documentation of every key) are kept.
    assert "Unknown keys are errors, on purpose" in merged
    assert "#gap_limit = 20" in merged


def test_a_user_key_replaces_the_image_value_not_adds_a_second() -> None:
    merged = merge_toml(image_toml(), "[node]\nauto_size = false\nprune_mib = 2000\n")
    assert tomllib.loads(merged)["node"] == {"auto_size": False, "prune_mib": 2000}
    assert merged.count("auto_size =") == 1 and "#prune_mib" not in merged


def test_sections_and_keys_the_image_does_not_mention_are_added_in_their_section() -> None:
    image = '[hearth]\nnetwork = "mainnet"\n\n[node]\n# sizing\nauto_size = true\n\n'
    merged = merge_toml(image, '[tower]\nmax_users = 3\n[node]\nrpc_timeout = 5.5\n')
    assert tomllib.loads(merged) == {"hearth": {"network": "mainnet"},
                                     "node": {"auto_size": True, "rpc_timeout": 5.5},
                                     "tower": {"max_users": 3}}


@pytest.mark.parametrize("value", ["plain", 'q"uo\\te', "ünï\tcode\n", 7, -1, 2.5, 1e-9, True,
                                   False])
def test_values_round_trip(value: object) -> None:
    assert tomllib.loads(f"k = {toml_value(value)}")["k"] == value


def test_not_toml_is_refused_with_its_reason() -> None:
    with pytest.raises(MergeError, match="not valid TOML"):
        merge_toml(image_toml(), "[hearth\nnetwork = 1\n")
    with pytest.raises(MergeError, match="node.x: expected a single value"):
        merge_toml(image_toml(), "[node]\nx = [1, 2]\n")


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_merge_files_checks_first_and_changes_nothing_when_refused(tmp_path: Path) -> None:
    target = write(tmp_path / "hearth.toml", image_toml())
    before = target.read_bytes()
    for bad, reason in [('[hearth]\nnetwork = "mainet"\n', "hearth.network: must be one of"),
                        ("[node]\nprune = 5\n", "node.prune: unknown key"),
                        ("[node]\nprune_mib = 100\n", "node.prune_mib: must be 0"),
                        ("[hearth\n", "not valid TOML")]:
        user = write(tmp_path / "user.toml", bad)
        with pytest.raises(MergeError, match=reason):
            merge_config_files(user, target)
        assert target.read_bytes() == before
        assert user.read_text() == bad  # the caller leaves it where the user put it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hearth.toml", "user.toml"]


def test_merge_files_writes_a_loadable_file_with_its_mode(tmp_path: Path) -> None:
    target = write(tmp_path / "hearth.toml", image_toml(), 0o644)
    user = write(tmp_path / "user.toml", '[hearth]\nnetwork = "signet"\n[log]\nlevel = "debug"\n')
    said = merge_config_files(user, target)
    assert said == "2 setting(s) taken: hearth.network, log.level"
    cfg = load_config(target, env={})
    assert (cfg.hearth.network, cfg.log.level, cfg.node.auto_size) == ("signet", "debug", True)
    assert target.stat().st_mode & 0o7777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hearth.toml", "user.toml"]


def run_firstboot_merge(user: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FIRSTBOOT_SETUP), "merge-config", str(user),
                           str(target)], capture_output=True, text=True, timeout=60)


def test_first_boot_step_refuses_with_a_clear_line_and_exit_2(tmp_path: Path) -> None:
    target = write(tmp_path / "hearth.toml", image_toml())
    user = write(tmp_path / "user.toml", "[node]\ndbcache_mib = \"big\"\n")
    out = run_firstboot_merge(user, target)
    assert out.returncode == 2, out
    assert out.stdout.strip() == "refused: node.dbcache_mib: expected int, got 'big'"
    assert target.read_text() == image_toml()
    ok = run_firstboot_merge(write(user, '[hearth]\nnetwork = "regtest"\n'), target)
    assert ok.returncode == 0 and "1 setting(s) taken: hearth.network" in ok.stdout, ok
    assert load_config(target, env={}).node.auto_size is True
