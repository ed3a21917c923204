"""What this boot's filesystem checks found, in one line per filesystem.

The root filesystem is checked by the initramfs before it is mounted (``fsck -y`` with
``fsck.repair=yes``; its output is saved by ``logsave`` in ``/run/initramfs/fsck.log``),
the boot and data partitions by ``systemd-fsck@`` (its output is in the journal). After a power
cut the owner should know whether anything had to be repaired, so ``hearth-fsck-report``
prints this on the console every boot and, when something was repaired or a check did
not run, puts it on the OLED once.

    python -m appliance.boot.fsck_report ROOT_LOG BOOT_LOG [DATA_LOG]
        exit 0: clean (or only a journal replayed), 1: something was repaired,
        2: a check failed or did not run
"""

from __future__ import annotations

import enum
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Check", "Outcome", "classify", "main", "summary"]


class Outcome(enum.IntEnum):
    """Ordered by how much the owner needs to hear about it."""

    CLEAN = 0
    RECOVERED = 1  # an unclean shutdown, put right by design (journal, FAT dirty bit)
    REPAIRED = 2  # fsck changed the filesystem: something was damaged
    FAILED = 3  # fsck could not repair it, or nothing checked it


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str

    def line(self) -> str:
        words = {Outcome.CLEAN: "clean", Outcome.RECOVERED: "clean after an unclean shutdown",
                 Outcome.REPAIRED: "REPAIRED", Outcome.FAILED: "NOT CLEAN"}
        return f"{self.name}: {words[self.outcome]}" + (f" ({self.detail})" if self.detail else "")


_FAILED = re.compile(r"UNEXPECTED INCONSISTENCY|RUN fsck MANUALLY|fsck failed|"
                     r"exit status [2-9]|FILE SYSTEM WAS NOT CLEANLY|Filesystem still has errors",
                     re.I)
_REPAIRED = re.compile(r"FILE SYSTEM WAS MODIFIED|Performing changes|Fix\? yes|Clear\? yes|"
                       r"Salvage\? yes|Free cluster summary wrong|Reclaimed|Truncating", re.I)
_PROMPT = re.compile(r"^\w+\? yes$")
_RECOVERED = re.compile(r"recovering journal|Dirty bit is set|orphaned inode", re.I)
#: e2fsck's "LABEL: clean, 123/456 files, ..." or its summary after a full check;
#: fsck.fat's "/dev/x: 12 files, 34/56 clusters".
_SUMMARY = re.compile(r"\d+/\d+ files|\d+ files, \d+/\d+ clusters")


def classify(name: str, text: str) -> Check:
    """One filesystem's check from the output fsck left (empty: it did not run)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return Check(name, Outcome.FAILED, "no check ran this boot")
    summary = next((ln for ln in reversed(lines) if _SUMMARY.search(ln)), "")
    for pattern, outcome in ((_FAILED, Outcome.FAILED), (_REPAIRED, Outcome.REPAIRED),
                             (_RECOVERED, Outcome.RECOVERED)):
        at = next((i for i, ln in enumerate(lines) if pattern.search(ln)), None)
        if at is None:
            continue
        if outcome == Outcome.RECOVERED:
            return Check(name, outcome, summary or lines[at])
        # e2fsck asks "Fix? yes" on its own line after saying what was wrong.
        prompt_only = _PROMPT.match(lines[at]) and at > 0
        return Check(name, outcome, lines[at - 1] if prompt_only else lines[at])
    if not summary:
        return Check(name, Outcome.FAILED, f"no result in its output: {lines[-1][:80]}")
    return Check(name, Outcome.CLEAN, summary)


def summary(checks: list[Check]) -> Outcome:
    return max((c.outcome for c in checks), default=Outcome.FAILED)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 64
    names = ("root filesystem", "boot partition", "data partition")
    checks = [classify(name, _read(Path(arg))) for name, arg in zip(names, args, strict=False)]
    for check in checks:
        print(check.line())
    worst = summary(checks)
    return {Outcome.CLEAN: 0, Outcome.RECOVERED: 0, Outcome.REPAIRED: 1}.get(worst, 2)


if __name__ == "__main__":
    sys.exit(main())
