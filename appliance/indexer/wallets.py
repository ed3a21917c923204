"""Wallet registration: descriptors (or x/y/z/t/u/vpub keys) -> watched scripts.

Descriptor maths is Bitcoin Core's: ``getdescriptorinfo`` canonicalises, checks and
expands multipath (``<0;1>``) descriptors, ``deriveaddresses`` derives. We only turn
addresses into scriptPubKeys. The box never holds spending keys: a descriptor with
private keys is refused before anything is stored.

A wallet is a set of *branches* (one ranged descriptor each, e.g. receive ``/0/*`` and
change ``/1/*``). Each branch keeps ``gap`` unused scripts derived past the last used one;
the gap grows as scripts get used, or when a client asks for a script just past it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..chain import (
    AddressError,
    address_to_script,
    base58check_decode,
    base58check_encode,
    script_to_scripthash,
)
from ..node.pace import Pacer

__all__ = [
    "Branch",
    "DescriptorRPC",
    "ScriptRef",
    "Wallet",
    "WalletError",
    "derive_scripts",
    "key_to_descriptors",
    "normalize_descriptors",
    "wallet_id_for",
]

# SLIP-132 version bytes -> (script template, is_mainnet). Electrum's conventions:
# x/tpub single-sig P2PKH, y/upub P2SH-P2WPKH, z/vpub P2WPKH.
_XPUB = bytes.fromhex("0488b21e")
_TPUB = bytes.fromhex("043587cf")
_KEY_VERSIONS: dict[bytes, tuple[str, bool]] = {
    bytes.fromhex("0488b21e"): ("pkh({})", True),
    bytes.fromhex("049d7cb2"): ("sh(wpkh({}))", True),
    bytes.fromhex("04b24746"): ("wpkh({})", True),
    bytes.fromhex("043587cf"): ("pkh({})", False),
    bytes.fromhex("044a5262"): ("sh(wpkh({}))", False),
    bytes.fromhex("045f1cf6"): ("wpkh({})", False),
}
_PRIVATE_VERSIONS = {bytes.fromhex(v) for v in
                     ("0488ade4", "049d7878", "04b2430c", "04358394", "044a4e28", "045f18bc")}
_KEY_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{100,120}")  # an extended key's base58


class WalletError(ValueError):
    """A registration that cannot be accepted; the message is safe to show the user."""


class DescriptorRPC(Protocol):
    async def call(self, method: str, *params: Any) -> Any: ...


@dataclass
class Branch:
    descriptor: str  # canonical, public, with checksum
    ranged: bool
    derived: int = 0  # scripts 0..derived-1 are watched
    used: int = -1  # highest index seen in a transaction


@dataclass
class Wallet:
    wallet_id: bytes
    branches: list[Branch]
    gap: int  # receive branch (0)
    birthday: int  # first height that can hold its history
    state: str = "new"  # new -> backfill -> live
    backfill_height: int = -1  # last height the backfill has covered
    label: str = ""
    change_gap: int = 20  # every other branch
    #: script ranges a client asked for past the gap, still being backfilled:
    #: {"branch", "start", "end" (exclusive), "height" (last height scanned)}
    jobs: list[dict[str, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: whether scantxoutset's view (coins past the gap) has been taken in; it runs
    #: beside the block scan and is applied once the wallet is live
    utxos_scanned: bool = True

    def pending(self, branch: int, index: int) -> bool:
        """Whether the script is in a job (watched, but its history still incomplete)."""
        return any(j["branch"] == branch and j["start"] <= index < j["end"] for j in self.jobs)

    @property
    def id_hex(self) -> str:
        return self.wallet_id.hex()

    def to_record(self) -> dict[str, Any]:
        return {
            "branches": [{"descriptor": b.descriptor, "ranged": b.ranged, "derived": b.derived,
                          "used": b.used} for b in self.branches],
            "gap": self.gap, "birthday": self.birthday, "state": self.state,
            "backfill_height": self.backfill_height, "label": self.label,
            "change_gap": self.change_gap, "jobs": self.jobs,
            "utxos_scanned": self.utxos_scanned, **self.extra,
        }

    @classmethod
    def from_record(cls, wallet_id: bytes, rec: dict[str, Any]) -> Wallet:
        known = {"branches", "gap", "birthday", "state", "backfill_height", "label", "change_gap",
                 "jobs", "utxos_scanned"}
        return cls(wallet_id, [Branch(**b) for b in rec["branches"]], int(rec["gap"]),
                   int(rec["birthday"]), str(rec["state"]), int(rec["backfill_height"]),
                   str(rec.get("label", "")), int(rec.get("change_gap", rec["gap"])),
                   [dict(j) for j in rec.get("jobs", [])],
                   {k: v for k, v in rec.items() if k not in known},
                   # records from before the scan ran beside the blocks: taken in first
                   bool(rec.get("utxos_scanned", True)))

    def wanted(self, branch: int) -> int:
        """How many scripts the branch should have derived (used + 1 + gap)."""
        b = self.branches[branch]
        return (b.used + 1 + self.gap_of(branch)) if b.ranged else 1

    def gap_of(self, branch: int) -> int:
        """The receive branch's gap limit, or the change one's for every other branch."""
        return self.gap if branch == 0 else self.change_gap


@dataclass(frozen=True, slots=True)
class ScriptRef:
    wallet_id: bytes
    branch: int
    index: int


def has_extended_private_key(text: str) -> bool:
    """An extended private key (xprv, tprv, SLIP-132 ones) anywhere in a descriptor, told
    by its prefix or its version bytes. Not a substring test: ``"prv" in text`` also
    refused public keys whose base58 happens to contain "prv" (about one wallet in a
    thousand; a functional test's random tpub hit it). bitcoind's ``hasprivatekeys``
    then catches every other private key form (WIF)."""
    for token in _KEY_RE.findall(text):
        if token[1:4] == "prv":
            return True
        try:
            payload = base58check_decode(token)
        except AddressError:
            continue
        if payload[:4] in _PRIVATE_VERSIONS:
            return True
    return False


def key_to_descriptors(key: str, network_is_main: bool) -> list[str]:
    """An extended public key (SLIP-132 prefixes) -> receive and change descriptors."""
    try:
        payload = base58check_decode(key)
    except AddressError:
        raise WalletError("not a valid extended public key (bad base58 checksum)") from None
    if len(payload) != 78:
        raise WalletError("not a valid extended public key (wrong length)")
    version = payload[:4]
    if version in _PRIVATE_VERSIONS:
        raise WalletError("that is a private key: Hearth only takes public keys")
    if version not in _KEY_VERSIONS:
        raise WalletError(f"unknown extended key version {version.hex()}")
    template, is_main = _KEY_VERSIONS[version]
    if is_main != network_is_main:
        raise WalletError("extended key is for {} but the box runs {}".format(
            "mainnet" if is_main else "a test network",
            "mainnet" if network_is_main else "a test network"))
    canonical = base58check_encode((_XPUB if is_main else _TPUB) + payload[4:])
    return [template.format(f"{canonical}/0/*"), template.format(f"{canonical}/1/*")]


async def normalize_descriptors(rpc: DescriptorRPC, items: Iterable[str],
                                network_is_main: bool) -> list[Branch]:
    """User input (descriptors and/or extended keys) -> canonical public branches.

    Multipath descriptors are expanded; a lone ``.../0/*`` descriptor gets its ``.../1/*``
    change twin, since every wallet we serve uses change addresses.
    """
    texts: list[str] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if _KEY_RE.fullmatch(item):
            texts += key_to_descriptors(item, network_is_main)
        else:
            texts.append(item)
    if not texts:
        raise WalletError("no descriptor given")
    branches: list[Branch] = []
    for text in texts:
        if has_extended_private_key(text):  # refused before it even reaches bitcoind
            raise WalletError("descriptor contains private keys: Hearth only takes public ones")
        try:
            info = await rpc.call("getdescriptorinfo", text.split("#")[0])
        except Exception as exc:  # bitcoind explains what is wrong with it
            raise WalletError(f"invalid descriptor: {getattr(exc, 'message', exc)}") from None
        if info.get("hasprivatekeys"):
            raise WalletError("descriptor contains private keys: Hearth only takes public ones")
        if "#" in text and text.split("#")[1] != info["checksum"]:
            raise WalletError(f"descriptor checksum mismatch (expected #{info['checksum']})")
        expansions = info.get("multipath_expansion") or [info["descriptor"]]
        for desc in expansions:
            branches.append(Branch(desc, bool(info["isrange"])))
    if len(branches) == 1 and branches[0].ranged:
        body = branches[0].descriptor.split("#")[0]
        if body.count("/0/*") == 1:
            twin = await rpc.call("getdescriptorinfo", body.replace("/0/*", "/1/*"))
            branches.append(Branch(twin["descriptor"], True))
    seen: set[str] = set()
    unique = []
    for b in branches:
        if b.descriptor not in seen:
            seen.add(b.descriptor)
            unique.append(b)
    return unique


def wallet_id_for(branches: list[Branch]) -> bytes:
    """Stable id: the same descriptors always give the same wallet (idempotent add)."""
    text = "\n".join(sorted(b.descriptor for b in branches))
    return hashlib.sha256(text.encode()).digest()[:8]


async def derive_scripts(rpc: DescriptorRPC, branch: Branch, start: int, end: int,
                         network: str) -> list[bytes]:
    """scriptPubKeys for indexes start..end-1 of a branch (bitcoind derives)."""
    if end <= start:
        return []
    pacer = Pacer()
    if not branch.ranged:
        return await _scripts(await rpc.call("deriveaddresses", branch.descriptor), network,
                              pacer)
    scripts: list[bytes] = []
    for lo in range(start, end, _DERIVE_CHUNK):
        hi = min(end, lo + _DERIVE_CHUNK)
        scripts += await _scripts(await rpc.call("deriveaddresses", branch.descriptor,
                                                 [lo, hi - 1]), network, pacer)
    return scripts


_DERIVE_CHUNK = 1000


async def _scripts(addresses: list[str], network: str, pacer: Pacer) -> list[bytes]:
    # Decoding is ~40 us an address here (bech32 in Python): 10,000 would hold the event
    # loop 0.4 s, so it yields as it goes.
    out = []
    for a in addresses:
        try:
            out.append(address_to_script(a, network))
        except AddressError as exc:  # bitcoind derived for another chain: a config error
            raise WalletError(str(exc)) from None
        await pacer.tick()
    return out


def scripthash_of(script: bytes) -> bytes:
    return script_to_scripthash(script)
