"""Showing the recovery phrase at first boot: screens, button presses, the acknowledgement.

The phrase itself is never stored (it is derived from ``hsm_secret``); only the fact
that the owner paged through it is, as ``<data_dir>/usb/phrase-acknowledged``. Until
that file exists the pairing gate shows no QR code and redeems no token, so nobody can
pair with a box whose owner has not seen its backup phrase.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..config import Config
from ..durability import write_atomic

__all__ = ["PhraseScreens", "ack_path", "acknowledge", "is_acknowledged", "own_like", "words_per_screen"]


def ack_path(cfg: Config) -> Path:
    return cfg.phrase_ack_file


def is_acknowledged(cfg: Config) -> bool:
    return ack_path(cfg).exists()


def own_like(path: Path, reference: Path) -> None:
    """Give ``path`` the owner of ``reference`` (the services' user), when running as root."""
    if os.geteuid() == 0:
        st = reference.stat()
        os.chown(path, st.st_uid, st.st_gid)


def acknowledge(cfg: Config) -> None:
    path = ack_path(cfg)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    own_like(path.parent, cfg.hearth.data_dir)
    # 0644: the indexer (another user) checks it.
    write_atomic(path, time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()).encode(), 0o644)
    own_like(path, cfg.hearth.data_dir)


def words_per_screen(cfg: Config) -> int:
    """4 words on a 128x64 panel, 8 on a 128x128 one (what the display's pages fit)."""
    height = cfg.display.height or (128 if cfg.display.driver == "ssd1327" else 64)
    return 8 if height >= 128 else 4


class PhraseScreens:
    """Which screen of the phrase is up; a press moves on, on the last screen it is done."""

    def __init__(self, total_words: int, per_screen: int) -> None:
        self.total = total_words
        self.per = per_screen
        self.screen = 0

    @property
    def screens(self) -> int:
        return -(-self.total // self.per)

    def span(self) -> tuple[int, int]:
        first = self.screen * self.per
        return first, min(self.total, first + self.per)

    def press(self) -> bool:
        """Advance; True when this press acknowledged the last screen."""
        if self.screen + 1 >= self.screens:
            return True
        self.screen += 1
        return False
