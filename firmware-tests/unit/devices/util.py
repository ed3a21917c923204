"""Shared helpers for the display tests: pixel measurements, a recording I2C bus, zbarimg."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = [
    "Bar",
    "RecordingBus",
    "find_bar",
    "FinderRow",
    "finder_module_sizes",
    "finder_rows",
    "ink_rows",
    "lit_count",
    "lit_in",
    "margin_is_empty",
    "zbar_decode",
]


def lit_count(image: Image.Image) -> int:
    """Lit (non-zero) pixels."""
    return sum(1 for value in image.convert("L").tobytes() if value)


def lit_in(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """Lit pixels in ``box`` = (left, top, right, bottom), right/bottom exclusive."""
    return lit_count(image.crop(box))


def ink_rows(image: Image.Image) -> set[int]:
    grey = image.convert("L")
    data = grey.tobytes()
    w = grey.width
    return {y for y in range(grey.height) if any(data[y * w:(y + 1) * w])}


def margin_is_empty(image: Image.Image, margin: int) -> bool:
    """True if nothing is lit outside the panel inside a render_with_margin canvas."""
    outside = image.convert("L")
    ImageDraw.Draw(outside).rectangle(
        (margin, margin, image.width - margin - 1, image.height - margin - 1), fill=0)
    return outside.getbbox() is None


@dataclass(frozen=True)
class Bar:
    left: int
    right: int  # inclusive
    top: int
    fill: int  # lit interior pixels on the bar's middle row

    @property
    def fraction(self) -> float:
        return self.fill / (self.right - self.left + 1 - 4)


def find_bar(image: Image.Image, min_run: int = 60) -> Bar:
    """The first progress bar: its top border is the first row with a lit run of at least
    ``min_run`` px (glyphs never make runs that long); its fill is measured two rows down,
    inside the 1 px border and 1 px gap."""
    grey = image.convert("L")
    data, w = grey.tobytes(), grey.width
    for y in range(grey.height):
        row = data[y * w:(y + 1) * w]
        x = 0
        while x < w:
            if row[x]:
                start = x
                while x < w and row[x]:
                    x += 1
                if x - start >= min_run:
                    mid = data[(y + 3) * w:(y + 4) * w]
                    fill = sum(1 for v in mid[start + 2:x - 2] if v)
                    return Bar(start, x - 1, y, fill)
            x += 1
    raise AssertionError("no progress bar found")


@dataclass(frozen=True)
class FinderRow:
    y: int
    left: int  # first column of the pattern
    right: int  # last column (inclusive)
    unit: int  # module size in px


def finder_rows(image: Image.Image) -> list[FinderRow]:
    """Rows crossing a QR finder pattern (dark:light:dark:light:dark = 1:1:3:1:1, dark =
    unlit) on a lit field; measured from pixels, independent of the renderer's maths."""
    grey = image.convert("L")
    data, w = grey.tobytes(), grey.width
    found = []
    for y in range(grey.height):
        runs: list[list[int]] = []  # [dark, start, length]
        for x in range(w):
            dark = int(data[y * w + x] == 0)
            if runs and runs[-1][0] == dark:
                runs[-1][2] += 1
            else:
                runs.append([dark, x, 1])
        for i in range(1, len(runs) - 5):
            window = runs[i:i + 5]
            a, b, c, d, e = (r[2] for r in window)
            if [r[0] for r in window] == [1, 0, 1, 0, 1] and a == b == d == e and c == 3 * a:
                found.append(FinderRow(y, window[0][1], window[4][1] + e - 1, a))
    return found


def finder_module_sizes(image: Image.Image) -> Counter[int]:
    return Counter(row.unit for row in finder_rows(image))


@dataclass
class RecordingBus:
    """An smbus stand-in under luma's real i2c interface: records every block write."""

    writes: list[tuple[int, int, list[int]]] = field(default_factory=list)

    def write_i2c_block_data(self, address: int, register: int, data: list[int]) -> None:
        self.writes.append((address, register, list(data)))

    def commands(self) -> list[int]:
        return [b for _, reg, data in self.writes if reg == 0x00 for b in data]

    def data_bytes(self) -> list[int]:
        return [b for _, reg, data in self.writes if reg == 0x40 for b in data]


def zbar_decode(path: Path) -> str:
    """The QR payload zbarimg reads from ``path`` (QR only, no charset conversion)."""
    exe = shutil.which("zbarimg")
    assert exe, "zbarimg not found: install Debian's zbar-tools (scripts/depends.d/test.txt)"
    out = subprocess.run([exe, "--raw", "-q", "--nodbus", "-Sdisable", "-Sqrcode.enable", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"zbarimg found no QR code in {path} (rc {out.returncode}): {out.stderr}"
    return out.stdout.rstrip("\n")
