"""tor's configuration, written from hearth.toml at every start (edits are lost).

One v3 onion service, ``HiddenServiceDir = <data_dir>/tor/onion``, maps each of the box's
public ports to the local listener: Electrum TCP and TLS, the Noise port and the setup
page. The virtual port is the same number as on the LAN, so ``<onion>:50001:t`` works
wherever ``hearth.local:50001:t`` did. Ports that are off (0) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config

__all__ = ["OnionPorts", "onion_ports", "render_torrc"]


@dataclass(frozen=True)
class OnionPorts:
    """The box's ports reachable on its onion address (None = off)."""

    electrum_tcp: int | None
    electrum_tls: int | None
    noise: int | None
    setup: int | None

    def targets(self, cfg: Config) -> list[tuple[int, str]]:
        """(virtual port, local address:port) for every port that is on."""
        binds = [(self.electrum_tcp, cfg.electrum.bind), (self.electrum_tls, cfg.electrum.bind),
                 (self.noise, cfg.transport.bind), (self.setup, cfg.setup.bind)]
        return [(port, f"{_local(bind)}:{port}") for port, bind in binds if port]


def _local(bind: str) -> str:
    """Where tor reaches a listener bound to ``bind`` (a wildcard is reached on loopback)."""
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind


def onion_ports(cfg: Config) -> OnionPorts:
    tls_on = cfg.electrum.tls == "lan"
    return OnionPorts(electrum_tcp=cfg.electrum.tcp_port or None,
                      electrum_tls=cfg.electrum.tls_port if tls_on else None,
                      noise=cfg.transport.noise_port or None,
                      setup=cfg.setup.port or None)


def render_torrc(cfg: Config) -> str:
    data = cfg.service_dir("tor") / "data"
    socks = f"127.0.0.1:{cfg.tor.socks_port}" if cfg.tor.socks_port else "0"
    lines = [
        "# Written by hearth-tor from hearth.toml at every start: edit hearth.toml instead.",
        f"DataDirectory {data}",
        "RunAsDaemon 0",  # supervisord keeps it in the foreground
        "Log notice stdout",  # the service reads bootstrap progress from here
        f"SocksPort {socks}",
        "ControlPort 0",
        "AvoidDiskWrites 1",  # the SD card also holds the chain
        f"HiddenServiceDir {cfg.onion_service_dir}",
        "HiddenServiceVersion 3",
    ]
    lines += [f"HiddenServicePort {virtual} {target}"
              for virtual, target in onion_ports(cfg).targets(cfg)]
    if cfg.tor.include:
        lines.append(f"%include {cfg.tor.include}")
    return "\n".join(lines) + "\n"
