"""Installing a verified bundle into the other slot with RAUC, then rebooting into it.

The flow, the same for ``appliance update install`` and a stick's prompt:

1. :func:`offer`: ``rauc info`` verifies the bundle (:mod:`.bundle`) and its version is
   compared with the running one; a downgrade or the same version is refused unless
   ``force`` (the CLI's ``--force``; the stick never forces).
2. :func:`install`: ``rauc install <bundle>`` (a client of the rauc D-Bus service, which
   verifies again, writes the other slot and calls the boot backend's ``set-primary``);
   its ``NN% step`` lines become progress. Read through a pty: a program writing to a
   pipe may buffer its lines until it exits, and the OLED would see nothing move.
3. The :class:`Rebooter`: the next boot tries the new slot once; the health check there
   marks it good or falls back (``appliance.update.health``, the image side).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..config import UpdateSection
from .bundle import BundleError, BundleInfo, RaucMissing, compare_versions, inspect
from .release import running_version
from .slots import reboot_into_other_slot

__all__ = ["InstallFailed", "NotNewer", "Offer", "Progress", "Rebooter",
           "TryBootRebooter", "install", "offer", "parse_progress"]

_PROGRESS = re.compile(r"^\s*(\d{1,3})%\s+(.+?)\s*$")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # on a terminal rauc clears lines
_INSTALL_TIMEOUT_S = 3600.0  # a slot write on a slow card; rauc reports progress meanwhile

ProgressSink = Callable[["Progress"], None]


class NotNewer(BundleError):
    """The bundle is not newer than what runs (refused unless forced)."""


class InstallFailed(BundleError):
    """``rauc install`` failed; the running slot is untouched and stays primary."""


@dataclass(frozen=True)
class Progress:
    percent: int
    step: str


@dataclass(frozen=True)
class Offer:
    """A verified bundle and what installing it would mean."""

    bundle: BundleInfo
    running: str

    @property
    def question(self) -> str:
        return f"Update {self.running} -> {self.bundle.version}?"


class Rebooter(Protocol):
    def reboot(self) -> None: ...


@dataclass(frozen=True)
class TryBootRebooter:
    """Reboot once into the slot the install armed (:func:`.slots.reboot_into_other_slot`:
    ``reboot '0 tryboot'`` on a Pi, the emulated one-shot flag under QEMU); a crash or
    reset during that boot comes back to the running slot."""

    def reboot(self) -> None:
        reboot_into_other_slot()


def offer(path: Path, settings: UpdateSection, *, running: str | None = None,
          force: bool = False) -> Offer:
    """The verified bundle at ``path`` as an offer, or the :class:`BundleError` why not."""
    info = inspect(path, keyring=Path(settings.keyring), compatible=settings.compatible,
                   rauc=settings.rauc)
    current = running_version() if running is None else running
    try:
        order = compare_versions(info.version, current)
    except ValueError:  # the running version is unreadable (a dev build): only by force
        order = 0
    if order <= 0 and not force:
        what = "the version running" if order == 0 else f"older than {current}"
        raise NotNewer(f"Bundle {info.version} is {what}: nothing to do")
    return Offer(info, current)


def parse_progress(line: str) -> Progress | None:
    """``" 40% Checking bundle done."`` -> Progress(40, "Checking bundle done.")."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    return Progress(min(100, int(match.group(1))), match.group(2))


def install(chosen: Offer, settings: UpdateSection,
            on_progress: ProgressSink = lambda p: None) -> None:
    """``rauc install`` of the offered bundle; raises :class:`InstallFailed` with rauc's
    reason (its ``LastError:`` line) when it does not succeed."""
    cmd = [settings.rauc, "install", str(chosen.bundle.path)]
    lines: list[str] = []
    main, child = pty.openpty()
    try:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=child, stderr=child,
                                    close_fds=True)
        except FileNotFoundError:
            raise RaucMissing("rauc is not installed: cannot install updates") from None
        finally:
            os.close(child)
        pending = b""
        for chunk in _Chunks(main):
            pending += chunk
            *done, pending = re.split(rb"\r?\n|\r", pending)
            for raw in done:
                line = _ESCAPE.sub("", raw.decode("utf-8", "replace"))
                lines.append(line)
                step = parse_progress(line)
                if step is not None:
                    on_progress(step)
        if pending:
            lines.append(_ESCAPE.sub("", pending.decode("utf-8", "replace")))
        try:
            code = proc.wait(timeout=_INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise InstallFailed("rauc install did not finish") from None
    finally:
        os.close(main)
    if code != 0:
        raise InstallFailed(f"Install failed: {_reason(lines)}")


class _Chunks:
    """The pty's output until the child closes it (EIO on Linux once it is gone)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = os.read(self.fd, 4096)
        except OSError as exc:
            if exc.errno == errno.EIO:
                raise StopIteration from None
            raise
        if not chunk:
            raise StopIteration
        return chunk


def _reason(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith("LastError:"):
            return line.split(":", 1)[1].strip()[:160]
    with contextlib.suppress(StopIteration):
        return next(line.strip() for line in reversed(lines) if line.strip())[:160]
    return "rauc install exited without a reason"
