"""What a wallet's QR code says, turned into what the add-wallet form takes.

Understood (see docs/setup-page.md): a bare extended public key (xpub/ypub/zpub, Ypub/Zpub,
t/u/v/U/Vpub), an output descriptor (one per line, ``#`` comments skipped), a key with its
origin ``[fingerprint/path]xpub...`` (Sparrow, Specter, Coldcard), and a JSON wallet export
with a ``descriptor`` (Specter, Sparrow's Specter export) or ``ExtPubKey`` / ``xpub``
(Wasabi and others). Refused in words: a ``bitcoin:`` URI or an address, a private key, a
recovery phrase (words or SeedQR digits), the animated UR format. Nothing read from a QR
is ever echoed in a refusal: it may be a secret.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mnemonic import Mnemonic

__all__ = ["ScanRefused", "ScannedWallet", "wallet_from_qr_texts"]

_B58 = "[1-9A-HJ-NP-Za-km-z]"
_PUB = re.compile(rf"^[xyzYZtuvUV]pub{_B58}{{100,115}}$")
_PRV = re.compile(rf"[xyzYZtuvUV]prv{_B58}{{100,115}}")
_ORIGIN = re.compile(rf"^\[([0-9a-fA-F]{{8}})((?:/[0-9]+['hH]?)*)\]([xt]pub{_B58}{{100,115}})$")
_DESCRIPTOR = re.compile(r"^(sh|wsh|wpkh|pkh|tr|multi|sortedmulti|combo|raw|rawtr)\(")
_ADDRESS = re.compile(rf"^((bc|tb|bcrt)1[02-9ac-hj-np-z]{{8,87}}|{_B58}{{25,35}})$",
                      re.IGNORECASE)
_WIF = re.compile(rf"^[5KLc9]{_B58}{{50,51}}$")
# BIP44/49/84/86 account paths: the script type an xpub with its origin stands for.
_PURPOSE = {"44": "pkh({})", "49": "sh(wpkh({}))", "84": "wpkh({})", "86": "tr({})"}

NO_QR = ("No QR code was found in the photo. Hold the phone so the code fills most of the "
         "picture, in focus and without glare, and try again.")
ADDRESS = ("That is an address (a place to send coins to), not a wallet. The box needs the "
           "wallet's public key (xpub, zpub ...): in the wallet look for \"export xpub\", "
           "\"public key\" or \"descriptor\".")
PRIVATE = ("That QR code holds a private key. Never show it to anything online. The box "
           "only needs the wallet's public key (xpub, zpub ...); nothing was stored.")
SEED = ("That QR code holds a recovery phrase (seed). Never show it to anything online. "
        "The box only needs the wallet's public key (xpub, zpub ...); nothing was stored.")
UR = ("That QR code is in the animated \"UR\" format, which the box cannot read from one "
      "photo. Ask the wallet to show its xpub or descriptor as plain text, or paste it.")
UNKNOWN = ("That QR code does not hold a wallet key the box knows. It needs an xpub, ypub, "
           "zpub (tpub, upub, vpub on test networks) or an output descriptor.")
MULTISIG = ("That key is one signer of a multisig wallet: the box needs the wallet's whole "
            "descriptor (all signers), not one key.")


class ScanRefused(ValueError):
    """The QR codes hold nothing to add; the message is for the person (no QR content)."""


@dataclass(frozen=True)
class ScannedWallet:
    key: str  # what goes in the form's key field: keys/descriptors, one per line
    label: str = ""
    note: str = ""  # said next to the confirmation (e.g. other QR codes were ignored)


def wallet_from_qr_texts(texts: list[str]) -> ScannedWallet:
    """The one wallet among the QR codes of a photo, or :class:`ScanRefused`."""
    if not texts:
        raise ScanRefused(NO_QR)
    found: list[ScannedWallet] = []
    refusals: list[str] = []
    for text in texts:
        try:
            found.append(_read(text))
        except ScanRefused as exc:
            refusals.append(str(exc))
    if len(found) > 1:
        raise ScanRefused(f"The photo shows {len(found)} different wallet QR codes. Take a "
                          "photo of only the one you want to add.")
    if found:
        if len(texts) > 1:
            return ScannedWallet(found[0].key, found[0].label,
                                 f"The photo held {len(texts)} QR codes; the one with a "
                                 "wallet key was used.")
        return found[0]
    # A secret in the photo is the thing to warn about first.
    for worst in (PRIVATE, SEED):
        if worst in refusals:
            raise ScanRefused(worst)
    raise ScanRefused(refusals[0])


def _read(text: str) -> ScannedWallet:
    text = text.strip()
    if _PRV.search(text) or _WIF.match(text) or _is_seed(text):
        raise ScanRefused(SEED if _is_seed(text) else PRIVATE)
    lowered = text.lower()
    if lowered.startswith("ur:"):
        raise ScanRefused(UR)
    if lowered.startswith("bitcoin:") or _ADDRESS.match(text) or lowered.startswith("addr("):
        raise ScanRefused(ADDRESS)
    if text.startswith("{"):
        return _read_json(text)
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    if not lines:
        raise ScanRefused(UNKNOWN)
    return ScannedWallet("\n".join(_item(line) for line in lines))


def _item(line: str) -> str:
    if _PUB.match(line) or _DESCRIPTOR.match(line):
        return line
    origin = _ORIGIN.match(line)
    if origin:
        fingerprint, path, key = origin.groups()
        steps = [s.rstrip("'hH") for s in path.split("/") if s]
        if steps and steps[0] == "48":
            raise ScanRefused(MULTISIG)
        template = _PURPOSE.get(steps[0]) if steps else None
        if template is None:
            return key  # no known purpose: the key alone, read as its prefix says
        path = "".join(f"/{s}h" for s in steps)  # bitcoind's spelling of hardened steps
        return template.format(f"[{fingerprint.lower()}{path}]{key}/0/*")
    raise ScanRefused(UNKNOWN)


def _read_json(text: str) -> ScannedWallet:
    try:
        data = json.loads(text)
    except ValueError:
        raise ScanRefused(UNKNOWN) from None
    if not isinstance(data, dict):
        raise ScanRefused(UNKNOWN)
    label = data.get("label") or data.get("name") or ""
    for field in ("descriptor", "ExtPubKey", "xpub", "zpub"):
        value = data.get(field)
        if isinstance(value, str) and value.strip():
            inner = _read(value)
            return ScannedWallet(inner.key, label if isinstance(label, str) else "")
    raise ScanRefused(UNKNOWN)


def _is_seed(text: str) -> bool:
    """12-24 BIP39 words, or SeedQR's 48/96 digits (4 per word)."""
    if text.isdigit() and len(text) in (48, 60, 72, 84, 96):
        return True
    words = text.lower().split()
    if len(words) not in (12, 15, 18, 21, 24):
        return False
    return all(w in _WORDS for w in words)


_WORDS = frozenset(Mnemonic("english").wordlist)
