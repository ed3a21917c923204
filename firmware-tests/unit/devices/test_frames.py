"""appliance.devices.frames: PNG frames written atomically, and the terminal rendering."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from appliance.devices.frames import FrameRecorder, to_terminal, write_png_atomic
from appliance.devices.oled import make_device, present
from appliance.devices.pages import PANEL_128X64, PANEL_128X128, Panel, SyncPage, render


def _frame(n: int, size: tuple[int, int] = (128, 64)) -> Image.Image:
    """A frame that encodes ``n`` in its lit pixels, so a reader can tell frames apart."""
    image = Image.new("1", size, 0)
    for i in range(n % 128):
        image.putpixel((i, n % size[1]), 1)
    return image


def _same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None


def test_record_writes_numbered_frames_and_current(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path, keep=10)
    paths = [rec.record(_frame(n)) for n in range(1, 4)]
    assert [p.name for p in paths if p] == ["frame-000001.png", "frame-000002.png", "frame-000003.png"]
    with Image.open(tmp_path / "current.png") as current:
        assert current.size == (128, 64) and _same(current, _frame(3))
    with Image.open(tmp_path / "frame-000002.png") as second:
        assert _same(second, _frame(2))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_unchanged_frames_are_skipped_and_old_ones_pruned(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path, keep=3)
    assert rec.record(_frame(1)) is not None
    assert rec.record(_frame(1)) is None
    for n in range(2, 7):
        rec.record(_frame(n))
    numbered = sorted(p.name for p in tmp_path.glob("frame-*.png"))
    assert numbered == ["frame-000004.png", "frame-000005.png", "frame-000006.png"]
    # a new recorder (a restarted service) continues the numbering
    assert FrameRecorder(tmp_path, keep=3).record(_frame(9)) == tmp_path / "frame-000007.png"


def test_keep_zero_writes_only_current(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path, keep=0, only_changes=False)
    assert rec.record(_frame(1)) == tmp_path / "current.png"
    assert rec.record(_frame(1)) == tmp_path / "current.png"
    assert [p.name for p in tmp_path.iterdir()] == ["current.png"]


def test_record_device_saves_what_the_dummy_shows(tmp_path: Path) -> None:
    device = make_device("ssd1327", simulate=True)
    rec = FrameRecorder(tmp_path)
    assert rec.record_device(device) is None  # nothing displayed yet
    frame = render(SyncPage(blocks=1, headers=2, progress=0.5, peers=1), PANEL_128X128)
    present(device, frame)
    path = rec.record_device(device)
    assert path is not None
    with Image.open(path) as saved:
        assert saved.mode == "RGB" and _same(saved.convert("1"), frame)


def test_a_real_panel_cannot_be_recorded(tmp_path: Path) -> None:
    class Panel:  # what a luma controller looks like to the recorder: no `image`
        pass

    with pytest.raises(TypeError, match="only the simulated panel"):
        FrameRecorder(tmp_path).record_device(Panel())  # type: ignore[arg-type]


def test_readers_never_see_a_partial_png(tmp_path: Path) -> None:
    rec = FrameRecorder(tmp_path, keep=2)
    rec.record(_frame(0))
    written = {_frame(n).tobytes() for n in range(200)}
    errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                with Image.open(tmp_path / "current.png") as image:
                    image.load()
                    if image.convert("1").tobytes() not in written:
                        errors.append("read a frame that was never written")
            except Exception as exc:  # a torn file would fail to decode here
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 200):
            rec.record(_frame(n))
    finally:
        done.set()
        thread.join()
    assert errors == []


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "current.png"
    write_png_atomic(_frame(1), path)

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        assert hasattr(fp, "write")
        fp.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png_atomic(_frame(2), path)
    monkeypatch.undo()
    with Image.open(path) as kept:
        assert _same(kept, _frame(1))
    assert [p.name for p in tmp_path.iterdir()] == ["current.png"]


@pytest.mark.parametrize(("panel", "lines"), [(PANEL_128X64, 32), (PANEL_128X128, 64)])
def test_terminal_rendering_size(panel: Panel, lines: int) -> None:
    frame = render(SyncPage(blocks=1, headers=2, progress=0.5, peers=1), panel)
    text = to_terminal(frame).split("\n")
    assert len(text) == lines and all(len(line) == 128 for line in text)
    assert set("".join(text)) <= {" ", "█", "▀", "▄"}
    lit = sum(2 if c == "█" else 1 for line in text for c in line if c != " ")
    assert lit == sum(1 for v in frame.convert("L").tobytes() if v)


def test_terminal_half_blocks() -> None:
    image = Image.new("1", (3, 3), 0)
    image.putpixel((0, 0), 1)  # top only
    image.putpixel((1, 1), 1)  # bottom only
    image.putpixel((2, 0), 1)
    image.putpixel((2, 1), 1)  # both
    image.putpixel((0, 2), 1)  # odd last row: top half of the last line
    assert to_terminal(image) == "▀▄█\n▀  "
