"""After an update: keep the new slot only if the box works on it (hearth-health.service).

Runs on every boot. On an ordinary boot it notes which version runs (the "from" of the
next update's result) and exits. On a **try boot** (the running slot is not the permanent
one, see :mod:`.slots`) it polls, for at most ``timeout_s`` (``/usr/lib/hearth/health.toml``,
part of the slot: each version brings its own policy), for:

* every supervisord program that starts by itself RUNNING;
* bitcoind answering RPC (``getblockchaininfo``);
* the Electrum port answering ``server.version``.

All three: ``rauc status mark-good`` (the backend makes the slot permanent). Time out:
``rauc status mark-bad`` and a reboot, which starts the permanent (old) slot since the
firmware's try flag is one-shot. Either way ``/var/lib/hearth/update/last-result.json``
says ``{"from", "to", "result", "reason"}`` (the old slot's status pages read it).
"""

from __future__ import annotations

import argparse
import configparser
import json
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..durability import write_atomic
from .release import running_version
from .slots import BootFiles, SlotError, current_slot

__all__ = ["HealthConfig", "Probe", "load_health_config", "main", "problems", "run"]

HEALTH_CONFIG = Path("/usr/lib/hearth/health.toml")
STATE_DIR = Path("/var/lib/hearth/update")
SUPERVISOR_CONF = Path("/etc/supervisor/conf.d/hearth.conf")
BITCOIN_CLI = ["bitcoin-cli", "-conf=/etc/bitcoin/bitcoin.conf", "-datadir=/var/lib/bitcoind",
               "-rpccookiefile=/run/bitcoind/.cookie", "getblockchaininfo"]


@dataclass(frozen=True)
class HealthConfig:
    timeout_s: float = 900.0
    poll_s: float = 10.0
    electrum_host: str = "127.0.0.1"
    electrum_port: int = 50001
    electrum_tls: bool = False
    bitcoin_cli: list[str] = field(default_factory=lambda: list(BITCOIN_CLI))


def load_health_config(path: Path = HEALTH_CONFIG, hearth_toml: Path | None = None) -> HealthConfig:
    """The slot's policy (``timeout_s``, ``poll_s``); the Electrum port from the box's
    hearth.toml (plain TCP if on, else TLS)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raw = {}
    unknown = set(raw) - {"timeout_s", "poll_s"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    cfg = HealthConfig(timeout_s=float(raw.get("timeout_s", 900)), poll_s=float(raw.get("poll_s", 10)))
    if hearth_toml is not None and hearth_toml.exists():
        from ..config import load_config

        electrum = load_config(hearth_toml).electrum
        port, tls = (electrum.tcp_port, False) if electrum.tcp_port else (electrum.tls_port, True)
        cfg = HealthConfig(cfg.timeout_s, cfg.poll_s, "127.0.0.1", port, tls, cfg.bitcoin_cli)
    return cfg


def autostart_programs(conf: Path = SUPERVISOR_CONF) -> set[str]:
    """The programs supervisord starts by itself (one-shot ones, autostart=false, excluded)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    return {s.split(":", 1)[1] for s in parser.sections()
            if s.startswith(("program:", "eventlistener:"))
            and parser[s].get("autostart", "true").strip().lower() != "false"}


@dataclass
class Probe:
    """The three checks, each a seam the unit tests replace."""

    cfg: HealthConfig
    programs: set[str]

    def supervisor(self) -> dict[str, str]:
        out = subprocess.run(["supervisorctl", "status"], capture_output=True, text=True, timeout=60)
        return {p[0]: p[1] for p in (line.split() for line in out.stdout.splitlines()) if len(p) >= 2}

    def bitcoind(self) -> str | None:
        try:
            out = subprocess.run(self.cfg.bitcoin_cli, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bitcoind RPC: {exc}"
        return None if out.returncode == 0 else f"bitcoind RPC: {(out.stderr or out.stdout).strip()[-200:]}"

    def electrum(self) -> str | None:
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "server.version",
                              "params": ["hearth-health", "1.4"]}).encode() + b"\n"
        try:
            address = (self.cfg.electrum_host, self.cfg.electrum_port)
            with socket.create_connection(address, timeout=20) as raw:
                sock: socket.socket = raw
                if self.cfg.electrum_tls:  # the box's own self-signed certificate
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    sock = context.wrap_socket(raw)
                sock.sendall(request)
                data = b""
                while b"\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            reply = json.loads(data.split(b"\n", 1)[0])
        except (OSError, ValueError) as exc:
            return f"Electrum port {self.cfg.electrum_port}: {exc}"
        if not isinstance(reply, dict) or "result" not in reply:
            return f"Electrum port {self.cfg.electrum_port}: no server.version result ({reply!r:.100})"
        return None


def problems(probe: Probe) -> list[str]:
    """What keeps this boot from being healthy (empty: healthy)."""
    found: list[str] = []
    try:
        states = probe.supervisor()
    except (OSError, subprocess.TimeoutExpired) as exc:
        states, found = {}, [f"supervisord: {exc}"]
    not_running = sorted(f"{p} {states.get(p, 'missing')}" for p in probe.programs
                         if states.get(p) != "RUNNING")
    if not_running:
        found.append("not RUNNING: " + ", ".join(not_running))
    for check in (probe.bitcoind, probe.electrum):
        if (problem := check()) is not None:
            found.append(problem)
    return found


Runner = Callable[[Sequence[str]], int]


def _run(argv: Sequence[str]) -> int:
    return subprocess.run(list(argv), check=False).returncode


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(value).encode() + b"\n", 0o644)


def _say(message: str) -> None:
    print(f"hearth-health: {message}", flush=True)


def run(files: BootFiles, slot: str, version: str, probe: Probe, state_dir: Path,
        runner: Runner = _run, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> str:
    """One boot's verdict: "ordinary", "good" or "rolled-back"."""
    if not files.is_try_boot(slot):
        _write_json(state_dir / "booted.json", {"slot": slot, "version": version})
        _say(f"slot {slot} (Hearth {version}) is the permanent slot: nothing to try")
        return "ordinary"
    try:
        previous = json.loads((state_dir / "booted.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    _say(f"try boot of slot {slot} (Hearth {version}): checking for {probe.cfg.timeout_s:.0f} s")
    deadline = clock() + probe.cfg.timeout_s
    while True:
        found = problems(probe)
        if not found:
            break
        if clock() >= deadline:
            reason = "; ".join(found)
            _say(f"slot {slot} NOT healthy after {probe.cfg.timeout_s:.0f} s: {reason}")
            _write_json(state_dir / "last-result.json",
                        {"from": previous, "to": version, "result": "rolled-back", "reason": reason})
            runner(["rauc", "status", "mark-bad"])
            _say("marked bad; rebooting into the previous slot")
            runner(["systemctl", "reboot"])
            return "rolled-back"
        sleep(probe.cfg.poll_s)
    if runner(["rauc", "status", "mark-good"]) != 0:
        raise SlotError("rauc status mark-good failed")
    _write_json(state_dir / "last-result.json",
                {"from": previous, "to": version, "result": "good", "reason": None})
    _write_json(state_dir / "booted.json", {"slot": slot, "version": version})
    _say(f"slot {slot} (Hearth {version}) healthy: marked good, now the permanent slot")
    return "good"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth-health", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HEALTH_CONFIG)
    parser.add_argument("--hearth-config", type=Path, default=Path("/etc/hearth/hearth.toml"))
    ns = parser.parse_args(argv)
    try:
        files, slot = BootFiles(), current_slot()
        # The box's settings are read only when there is something to check.
        probe = Probe(load_health_config(ns.config, ns.hearth_config), autostart_programs()) \
            if files.is_try_boot(slot) else Probe(HealthConfig(), set())
        run(files, slot, running_version(), probe, STATE_DIR)
    except (SlotError, OSError, ValueError) as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
