"""What a ``.raucb`` is, verified by RAUC itself before anything changes.

``rauc info --keyring=<keyring> --output-format=json <bundle>`` checks the bundle's CMS
signature against the box's certificate and prints its manifest; we add the two checks
``rauc info`` leaves to ``rauc install``: the manifest's ``compatible`` (a bundle for
another board or architecture) and a version we can compare. Every refusal is a
:class:`BundleError` subclass whose message is one short sentence for the OLED.

Versions follow one documented rule (no PEP 440 dependency): dot-separated decimal
numbers, compared number by number, missing ones count as 0 (``0.1`` == ``0.1.0``);
anything else (``0.1.1rc1``, ``""``) is refused as unreadable rather than guessed.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BadSignature", "BundleError", "BundleInfo", "CorruptBundle", "RaucMissing",
           "WrongCompatible", "compare_versions", "inspect", "parse_version"]

_VERSION = re.compile(r"\d+(\.\d+)*")
_INFO_TIMEOUT_S = 120.0  # a whole-bundle signature check reads the file once (plain format)


class BundleError(Exception):
    """The bundle is refused; ``str(exc)`` is the short reason shown to the owner."""


class RaucMissing(BundleError):
    """The ``rauc`` program is not installed (or not runnable)."""


class BadSignature(BundleError):
    """Not signed by the key whose certificate the box carries."""


class CorruptBundle(BundleError):
    """Truncated, damaged, or not a RAUC bundle at all."""


class WrongCompatible(BundleError):
    """Made for another system (another architecture or product)."""

    def __init__(self, found: str, expected: str) -> None:
        super().__init__(f"Bundle is for {found or 'an unnamed system'}, this box is {expected}")
        self.found, self.expected = found, expected


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    compatible: str
    version: str
    images: tuple[str, ...]  # the slot classes it writes ("rootfs")


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.1.10"`` -> ``(0, 1, 10)`` with trailing zeros dropped; ValueError otherwise."""
    if not _VERSION.fullmatch(text.strip()):
        raise ValueError(f"unreadable version {text!r} (expected numbers like 0.1.1)")
    numbers = [int(n) for n in text.strip().split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as, or newer than ``b``."""
    x, y = parse_version(a), parse_version(b)
    return (x > y) - (x < y)


def inspect(path: Path, *, keyring: Path, compatible: str, rauc: str = "rauc") -> BundleInfo:
    """The verified manifest of ``path``, or the :class:`BundleError` saying why not."""
    if not path.is_file():
        raise CorruptBundle(f"No bundle at {path.name}")
    if not keyring.is_file():
        # Without a keyring rauc would skip the signature check: never run it that way.
        raise BundleError(f"No update keyring on this box ({keyring})")
    cmd = [rauc, "info", f"--keyring={keyring}", "--output-format=json", str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_INFO_TIMEOUT_S,
                              check=False)
    except FileNotFoundError:
        raise RaucMissing("rauc is not installed: cannot check updates") from None
    except subprocess.TimeoutExpired:
        raise CorruptBundle(f"Checking {path.name} took over {_INFO_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise _refusal(path, done.stderr)
    try:
        manifest = json.loads(done.stdout)
        found = str(manifest.get("compatible") or "")
        version = str(manifest.get("version") or "")
        images = tuple(name for image in manifest.get("images") or [] for name in image)
    except (ValueError, AttributeError, TypeError):
        raise CorruptBundle(f"rauc printed no manifest for {path.name}") from None
    if found != compatible:
        raise WrongCompatible(found, compatible)
    try:
        parse_version(version)
    except ValueError:
        raise CorruptBundle(f"Bundle version {version!r} is not like 0.1.1") from None
    return BundleInfo(path, found, version, images)


def _refusal(path: Path, stderr: str) -> BundleError:
    """rauc's complaint as a typed error (its last line, which carries the reason)."""
    lines = [line for line in stderr.splitlines() if line.strip()
             and not line.startswith("rauc-Message")]
    reason = lines[-1].strip() if lines else "rauc refused it"
    lowered = reason.lower()
    # The format first: "Invalid bundle format: Signature size ... exceeds bundle size".
    if "bundle format" in lowered or "exceeds bundle size" in lowered or "squashfs" in lowered \
            or "too small" in lowered or "magic" in lowered:
        return CorruptBundle(f"{path.name} is truncated or damaged")
    if "signature" in lowered or "verify error" in lowered:
        return BadSignature(f"Bad signature: {path.name} is not from Hearth's key")
    return BundleError(f"{path.name} refused: {reason[:120]}")
