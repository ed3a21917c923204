"""rootfs-overlay's settings that the image depends on, checked without building it."""

from __future__ import annotations

import configparser
from pathlib import Path

from appliance.config import load_config

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "rootfs-overlay"


def supervisor_conf() -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(OVERLAY / "etc/supervisor/conf.d/hearth.conf")
    return conf


def test_every_program_log_is_rotated_and_small() -> None:
    """The card wears with every byte: no program may log without a cap."""
    conf = supervisor_conf()
    programs = [s for s in conf.sections() if s.startswith(("program:", "eventlistener:"))]
    assert len(programs) >= 8, programs
    for name in programs:
        section = conf[name]
        for stream in ("stdout", "stderr"):
            target = section.get(f"{stream}_logfile", "NONE" if stream == "stderr" else None)
            if target is None or target == "NONE":
                continue
            size = section.get(f"{stream}_logfile_maxbytes")
            assert size is not None and size.endswith("MB") and int(size[:-2]) <= 5, (name, stream)
            assert int(section.get(f"{stream}_logfile_backups", "10")) <= 2, (name, stream)
    # supervisord's own log, merged over Debian's section.
    assert conf["supervisord"]["logfile_maxbytes"] == "1MB"


def test_image_env_points_the_node_service_at_first_boots_bitcoin_conf() -> None:
    env = dict(line.split("=", 1) for line in (OVERLAY / "usr/lib/hearth/image.env").read_text()
               .splitlines() if line and not line.startswith("#"))
    assert env["HEARTH_NODE_CONF_FILE"] == "/etc/bitcoin/bitcoin.conf"
    cfg = load_config(OVERLAY / "etc/hearth/hearth.toml", env=env)
    assert cfg.node.conf_file == "/etc/bitcoin/bitcoin.conf"
    assert str(cfg.cookie_file) == "/run/bitcoind/.cookie"
