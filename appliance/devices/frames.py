"""What a simulated panel shows, for people and tests: PNG files and terminal text.

``FrameRecorder`` writes each new frame of the dummy device as ``frame-NNNNNN.png`` (the
last ``keep`` of them) and as ``current.png``; every file is written under a temporary
name and renamed into place, so a viewer or a test polling ``current.png`` never reads
half a file. ``to_terminal`` draws a frame with half-block characters, two pixel rows
per text row, so a 128x64 panel fits in 128x32 characters.

The recorder writes whatever the panel shows, recovery words included: point it at a
directory only in ``sim``, never on a real box.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageChops

from ..durability import atomic_file
from .oled import OledDevice

__all__ = ["FrameRecorder", "to_terminal", "write_png_atomic"]

_NUMBERED = re.compile(r"^frame-(\d{6,})\.png$")


def write_png_atomic(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG at ``path`` so readers see the old file or the new one, never a part."""
    with atomic_file(path, 0o644) as fh:  # 0644: a viewer run as another user reads frames
        image.save(fh, format="PNG")


class FrameRecorder:
    """Numbered PNGs plus ``current.png`` in ``directory``, one per changed frame."""

    def __init__(self, directory: Path, *, keep: int = 100, only_changes: bool = True) -> None:
        if keep < 0:
            raise ValueError("keep must be >= 0")
        self.directory = directory
        self.keep = keep
        self.only_changes = only_changes
        directory.mkdir(parents=True, exist_ok=True)
        numbers = self._numbered()
        # Continue after what a previous run left, so numbers stay in time order.
        self._next = (numbers[-1][0] + 1) if numbers else 1
        self._last: Image.Image | None = None

    def record(self, frame: Image.Image) -> Path | None:
        """Save ``frame``; returns its numbered path (``current.png`` if ``keep`` is 0), or
        None when it equals the previous frame and ``only_changes`` is set."""
        if self.only_changes and self._last is not None and _same(self._last, frame):
            return None
        self._last = frame.copy()
        current = self.directory / "current.png"
        path = current
        if self.keep:
            path = self.directory / f"frame-{self._next:06d}.png"
            self._next += 1
            write_png_atomic(frame, path)
            for _, old in self._numbered()[:-self.keep]:
                old.unlink(missing_ok=True)
        write_png_atomic(frame, current)
        return path

    def record_device(self, device: OledDevice) -> Path | None:
        """Save what luma's dummy device last displayed (after its rotation), if anything."""
        # The dummy keeps the frame in `image`; a real panel has no such attribute.
        image = getattr(device, "image", None)
        if image is None:
            if not hasattr(device, "image"):
                raise TypeError(f"{type(device).__name__} keeps no frame: "
                                "only the simulated panel can be recorded")
            return None
        if not isinstance(image, Image.Image):
            raise TypeError(f"{type(device).__name__}.image is not an image")
        return self.record(image)

    def _numbered(self) -> list[tuple[int, Path]]:
        found = []
        for entry in self.directory.iterdir():
            match = _NUMBERED.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found)


def _same(a: Image.Image, b: Image.Image) -> bool:
    if a.mode != b.mode or a.size != b.size:
        return False
    return ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def to_terminal(frame: Image.Image) -> str:
    """The frame as lines of ``█ ▀ ▄`` and spaces: lit pixels are ink, one text row per
    two pixel rows (a 128x64 frame is 32 lines of 128 characters)."""
    grey = frame.convert("L")
    width, height = grey.size
    pixels = grey.tobytes()  # one byte per pixel, row by row

    def lit(x: int, y: int) -> bool:
        return y < height and pixels[y * width + x] > 0

    lines = []
    for y in range(0, height, 2):
        row = []
        for x in range(width):
            top, bottom = lit(x, y), lit(x, y + 1)
            row.append("█" if top and bottom else "▀" if top else "▄" if bottom else " ")
        lines.append("".join(row))
    return "\n".join(lines)
