"""``appliance tor address``: the onion strings to type into wallets away from home."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import Config
from ..identity import IdentityError, load_hsm_secret
from .keys import derive_onion_key
from .torrc import onion_ports

__all__ = ["add_parser", "addresses", "run"]


def addresses(cfg: Config, onion: str) -> dict[str, str]:
    """What each stock client is given: Electrum's server strings, the Noise and setup ports."""
    ports = onion_ports(cfg)
    out: dict[str, str] = {"onion": onion}
    if ports.electrum_tcp:
        out["electrum_tcp"] = f"{onion}:{ports.electrum_tcp}:t"
    if ports.electrum_tls:
        out["electrum_tls"] = f"{onion}:{ports.electrum_tls}:s"
    if ports.noise:
        out["noise"] = f"{onion}:{ports.noise}"
    if ports.setup:
        out["setup"] = f"https://{onion}:{ports.setup}/"
    return out


_LABELS = {"electrum_tcp": "Electrum, Sparrow, phone wallets: plain TCP (Tor encrypts it)",
           "electrum_tls": "the same with TLS (the box's self-signed certificate)",
           "noise": "paired computers: appliance-client tunnel --tor",
           "setup": "the setup page, from Tor Browser"}


def add_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
               common: argparse.ArgumentParser) -> None:
    tor = sub.add_parser("tor", help="the box as a Tor onion service (away from home)")
    tsub = tor.add_subparsers(dest="tor_command", required=True)
    address = tsub.add_parser("address", parents=[common],
                              help="print the onion addresses for wallets (derived from the box's key)")
    address.add_argument("--json", action="store_true")


def run(cfg: Config, args: argparse.Namespace) -> int:
    if not cfg.tor.enabled:
        print("appliance: tor is off ([tor] enabled = false)", file=sys.stderr)
        return 1
    try:
        onion = derive_onion_key(load_hsm_secret(cfg.hsm_secret_file)).address
    except IdentityError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    found = addresses(cfg, onion)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for name, value in found.items():
        if name != "onion":  # the string alone on its line: copied whole into a wallet
            print(f"# {_LABELS[name]}\n{value}")
    return 0
