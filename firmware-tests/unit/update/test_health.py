"""The health program's verdict on a try boot (appliance.update.health): real boot files
(appliance.update.slots), a real Electrum-speaking socket, the probes' other seams
(supervisord, bitcoin-cli) replaced; rauc and reboot recorded instead of run."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from functional.framework.util import free_port

from appliance.update import health
from appliance.update.health import HealthConfig, Probe
from appliance.update.slots import BootFiles

CONFIG = "arm_64bit=1\n[all]\ninclude hearth-slot.txt\n"


@pytest.fixture
def files(tmp_path: Path) -> BootFiles:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "config.txt").write_text(CONFIG)
    f = BootFiles(boot)
    f.init("A")
    f.set_state("B", "bad", "A")
    f.set_primary("B", "A")  # an install armed B
    return f


@pytest.fixture
def electrum() -> Iterator[int]:
    """A listener answering server.version like the indexer's Electrum server."""
    port = free_port()
    srv = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                req = json.loads(conn.makefile("rb").readline())
                conn.sendall(json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                         "result": ["hearth", "1.4"]}).encode() + b"\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join()
    srv.close()


class FakeProbe(Probe):
    def __init__(self, cfg: HealthConfig, states: dict[str, str], rpc: str | None = None) -> None:
        super().__init__(cfg, set(states))
        self.states, self.rpc = states, rpc

    def supervisor(self) -> dict[str, str]:
        return self.states

    def bitcoind(self) -> str | None:
        return self.rpc


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def recorder(calls: list[list[str]], files: BootFiles, slot: str):  # type: ignore[no-untyped-def]
    """rauc's mark-good/mark-bad call the backend, as rauc would; reboot is recorded."""
    def run(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        if argv[:3] == ["rauc", "status", "mark-good"]:
            files.set_state(slot, "good", slot)
        elif argv[:3] == ["rauc", "status", "mark-bad"]:
            files.set_state(slot, "bad", slot)
        return 0
    return run


def test_healthy_try_boot_is_marked_good_and_permanent(files: BootFiles, electrum: int,
                                                       tmp_path: Path) -> None:
    state = tmp_path / "state"
    calls: list[list[str]] = []
    health._write_json(state / "booted.json", {"slot": "A", "version": "0.1.0"})
    cfg = HealthConfig(timeout_s=60, poll_s=5, electrum_port=electrum)
    clock = Clock()
    probe = FakeProbe(cfg, {"bitcoind": "RUNNING", "hearth-indexer": "RUNNING"})
    verdict = health.run(files, "B", "0.1.1", probe, state, recorder(calls, files, "B"), clock, clock.sleep)
    assert verdict == "good" and calls == [["rauc", "status", "mark-good"]]
    assert files.permanent() == "B" and files.trying() is None
    assert json.loads((state / "last-result.json").read_text()) == \
        {"from": "0.1.0", "to": "0.1.1", "result": "good", "reason": None}


def test_unhealthy_try_boot_is_marked_bad_and_rebooted(files: BootFiles, electrum: int,
                                                       tmp_path: Path) -> None:
    state = tmp_path / "state"
    calls: list[list[str]] = []
    cfg = HealthConfig(timeout_s=60, poll_s=5, electrum_port=electrum)
    clock = Clock()
    probe = FakeProbe(cfg, {"bitcoind": "RUNNING", "hearth-indexer": "BACKOFF"}, rpc="bitcoind RPC: refused")
    verdict = health.run(files, "B", "0.1.1", probe, state, recorder(calls, files, "B"), clock, clock.sleep)
    assert verdict == "rolled-back"
    assert calls == [["rauc", "status", "mark-bad"], ["systemctl", "reboot"]]
    assert clock.now >= 60  # it waited the whole set time first
    assert files.permanent() == "A" and files.trying() is None and files.get_state("B") == "bad"
    result = json.loads((state / "last-result.json").read_text())
    assert result["result"] == "rolled-back" and result["to"] == "0.1.1"
    assert "hearth-indexer BACKOFF" in result["reason"] and "refused" in result["reason"]


def test_electrum_silent_is_a_problem(files: BootFiles, tmp_path: Path) -> None:
    cfg = HealthConfig(timeout_s=0, electrum_port=free_port())  # nothing listens there
    found = health.problems(FakeProbe(cfg, {"bitcoind": "RUNNING"}))
    assert len(found) == 1 and found[0].startswith(f"Electrum port {cfg.electrum_port}")


def test_ordinary_boot_only_notes_the_version(files: BootFiles, tmp_path: Path) -> None:
    calls: list[list[str]] = []
    verdict = health.run(files, "A", "0.1.0", FakeProbe(HealthConfig(), {}), tmp_path,
                         recorder(calls, files, "A"))
    assert verdict == "ordinary" and calls == []
    assert json.loads((tmp_path / "booted.json").read_text()) == {"slot": "A", "version": "0.1.0"}


def test_autostart_programs_skip_one_shots(tmp_path: Path) -> None:
    conf = tmp_path / "hearth.conf"
    conf.write_text("[program:bitcoind]\ncommand=x\n[program:bitcoind-repair]\nautostart=false\n"
                    "[eventlistener:hearth-supervision]\ncommand=y\n")
    assert health.autostart_programs(conf) == {"bitcoind", "hearth-supervision"}


def test_config_file_and_its_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "health.toml"
    cfg.write_text("timeout_s = 240\npoll_s = 3\n")
    assert health.load_health_config(cfg).timeout_s == 240
    cfg.write_text("timeout = 240\n")
    with pytest.raises(ValueError, match="unknown keys"):
        health.load_health_config(cfg)
    assert health.load_health_config(tmp_path / "missing.toml").timeout_s == 900
    toml = tmp_path / "hearth.toml"
    toml.write_text("[electrum]\ntcp_port = 0\n")
    c = health.load_health_config(tmp_path / "missing.toml", toml)
    assert (c.electrum_port, c.electrum_tls) == (50002, True)


def test_image_health_config_parses() -> None:
    repo = Path(__file__).resolve().parents[3]
    assert health.load_health_config(repo / "rootfs-overlay/usr/lib/hearth/health.toml").timeout_s == 900
