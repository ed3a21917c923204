"""A private Tor network on loopback, from Debian's tor: the box's onion service on it.

Three directory authorities (keys from ``tor-gencert --create-identity-key``, relay
fingerprints from ``tor --list-fingerprint``), a few relays, and client torrcs, all with
``TestingTorNetwork 1`` and voting intervals of seconds. torproject/chutney's
``torrc_templates`` (common.i, authority.i, relay-non-exit.tmpl, hs.tmpl, client.tmpl)
are the model; these lines are our own. Its notes say such a network bootstraps in
20-45 s. Nothing leaves 127.0.0.1: every tor here knows only these authorities.

    net = TorNetwork(tmp_path / "tor"); net.start()
    net.network_torrc   # the lines a box's or a client's tor needs (%include them)
    socks = net.add_client()   # a SOCKS port on a client tor of this network
    net.stop()
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .util import free_port, stop_process, wait_until

__all__ = ["TorNetwork"]

#: Options every node shares (chutney's common.i): a test network that votes every
#: 10 s, gives every relay the flags a 5-relay network needs, and builds circuits from
#: what it has instead of waiting for most of a real consensus.
_COMMON = """\
TestingTorNetwork 1
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteHSDir *
TestingDirAuthVoteGuard *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
AssumeReachable 1
ShutdownWaitLength 0
SafeLogging 0
ProtocolWarnings 1
LogTimeGranularity 1
Sandbox 0
"""

#: Authorities (chutney's authority.i): vote as fast as tor allows; Vote + Dist must be
#: less than half the interval, because without a consensus tor votes at Interval/2.
_AUTHORITY = """\
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
"""


@dataclass
class _Node:
    name: str
    dir: Path
    or_port: int = 0
    dir_port: int = 0
    socks_port: int = 0
    torrc: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self.torrc = self.dir / "torrc"

    @property
    def log_file(self) -> Path:
        return self.dir / "notice.log"


class TorNetwork:
    def __init__(self, base: Path, authorities: int = 3, relays: int = 2) -> None:
        self.base = base
        self.nodes: list[_Node] = []
        self._authority_lines: list[str] = []
        self._n_auth = authorities
        self._n_relays = relays

    # --- setup ---------------------------------------------------------------------------
    def _authority_keys(self, node: _Node) -> str:
        """Make an authority's keys; its DirAuthority line."""
        keys = node.dir / "keys"
        keys.mkdir(parents=True, mode=0o700)
        # An empty passphrase on stdin; a month of validity is more than any test needs.
        subprocess.run(["tor-gencert", "--create-identity-key", "--passphrase-fd", "0",
                        "-m", "1", "-a", f"127.0.0.1:{node.dir_port}",
                        "-i", str(keys / "authority_identity_key"),
                        "-s", str(keys / "authority_signing_key"),
                        "-c", str(keys / "authority_certificate")],
                       input=b"\n", check=True, capture_output=True, cwd=node.dir)
        cert = (keys / "authority_certificate").read_text()
        v3ident = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.M)
        assert v3ident, cert
        fingerprint = self._fingerprint(node)
        return (f"DirAuthority {node.name} orport={node.or_port} no-v2 v3ident={v3ident.group(1)} "
                f"127.0.0.1:{node.dir_port} {fingerprint}")

    @staticmethod
    def _fingerprint(node: _Node) -> str:
        """The relay identity key tor makes in the data directory, as its fingerprint."""
        node.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        node.torrc.write_text("")  # tor wants a regular file; the options follow
        out = subprocess.run(
            ["tor", "--list-fingerprint", "--defaults-torrc", "/dev/null", "-f", str(node.torrc),
             "--DataDirectory", str(node.dir), "--ORPort", str(node.or_port),
             "--Nickname", node.name, "--quiet",
             "--DirAuthority", "placeholder 127.0.0.1:1 " + "F" * 40],
            check=True, capture_output=True, text=True).stdout
        match = re.search(rf"^{node.name} ((?:[0-9A-F]{{4}} ?){{10}})$", out, re.M)
        assert match, out
        return match.group(1).replace(" ", "")

    @property
    def network_torrc(self) -> str:
        """What any tor joining this network needs: the test options and the authorities."""
        return _COMMON + "\n".join(self._authority_lines) + "\n"

    def _write_torrc(self, node: _Node, role: str) -> None:
        lines = [self.network_torrc, f"DataDirectory {node.dir}", f"Nickname {node.name}",
                 "Log notice stdout", "RunAsDaemon 0", "ControlPort 0"]
        if node.or_port:
            lines += ["Address 127.0.0.1", f"ORPort 127.0.0.1:{node.or_port}",
                      "ExitRelay 0", "ExitPolicy reject *:*", f"ContactInfo {node.name}@test"]
        if node.dir_port:
            lines.append(f"DirPort 127.0.0.1:{node.dir_port}")
        lines.append(f"SocksPort {f'127.0.0.1:{node.socks_port}' if node.socks_port else 0}")
        if role == "authority":
            lines.append(_AUTHORITY)
        node.torrc.write_text("\n".join(lines) + "\n")

    def _run(self, node: _Node) -> None:
        node.log = open(node.log_file, "ab")  # noqa: SIM115 - closed in stop()
        node.process = subprocess.Popen(
            ["tor", "-f", str(node.torrc), "--defaults-torrc", "/dev/null"],
            stdout=node.log, stderr=subprocess.STDOUT)
        self.nodes.append(node)

    # --- running -------------------------------------------------------------------------
    def start(self) -> None:
        auths = [_Node(f"auth{i}", self.base / f"auth{i}", free_port(), free_port())
                 for i in range(self._n_auth)]
        # RSA key generation is most of the setup time: one authority per thread.
        with ThreadPoolExecutor(len(auths)) as pool:
            self._authority_lines = list(pool.map(self._authority_keys, auths))
        relays = []
        for i in range(self._n_relays):
            relay = _Node(f"relay{i}", self.base / f"relay{i}", free_port())
            relay.dir.mkdir(parents=True, mode=0o700)
            relays.append(relay)
        for node in auths:
            self._write_torrc(node, "authority")
            self._run(node)
        for node in relays:
            self._write_torrc(node, "relay")
            self._run(node)

    def add_client(self, name: str = "client") -> int:
        """A client tor on this network; returns its SOCKS port."""
        node = _Node(name, self.base / name, socks_port=free_port())
        node.dir.mkdir(parents=True, mode=0o700)
        self._write_torrc(node, "client")
        self._run(node)
        return node.socks_port

    def wait_bootstrapped(self, name: str, timeout: float = 120.0) -> None:
        node = next(n for n in self.nodes if n.name == name)
        wait_until(lambda: self._bootstrapped(node), timeout=timeout, interval=0.5)

    @staticmethod
    def _bootstrapped(node: _Node) -> bool:
        if node.process is not None and node.process.poll() is not None:
            raise AssertionError(f"tor {node.name} exited:\n" + node.log_file.read_text()[-3000:])
        return "Bootstrapped 100%" in node.log_file.read_text(errors="replace")

    def logs(self) -> str:
        """Every node's last lines, for a failure message."""
        return "\n".join(f"--- {n.name}\n" + n.log_file.read_text(errors="replace")[-1500:]
                         for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                stop_process(node.process, timeout=10)
                node.process = None
            if node.log is not None:
                node.log.close()
                node.log = None
