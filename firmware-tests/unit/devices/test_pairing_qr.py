"""The pairing QR code, end to end on luma's dummy panel, decoded by zbarimg.

The frame goes through the same path as on the box (pages.render -> oled.present ->
device.display), is saved by the FrameRecorder at panel resolution, scaled up by an
integer factor with nearest-neighbour only (so every panel pixel stays a sharp square,
as a phone camera would see it), and must decode to the exact payload.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import segno
from PIL import Image, ImageOps

from appliance.devices.frames import FrameRecorder
from appliance.devices.oled import make_device, present
from appliance.devices.pages import (
    ALNUM_CAPACITY_L,
    MAX_QR_VERSION,
    MIN_QR_SCALE,
    PANEL_128X64,
    PANEL_128X128,
    PairingPage,
    Panel,
    QRPayloadError,
    make_pairing_qr,
    pairing_layout,
    qr_layout,
    render,
)
from appliance.pairing.payload import PairingPayload

from .util import finder_rows, zbar_decode

# The box's real pairing code (appliance.pairing.payload): "HEARTH:" + Base45, 76
# characters of the 77 a version 3-L code holds. The key is secp256k1's generator.
G_X = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
PAYLOAD_76 = PairingPayload(pubkey=b"\x02" + G_X, host="192.168.1.23", port=50003,
                            token=bytes.fromhex("00ff10ee20dd30cc")).encode()
# Other shapes: base32 (no '=' padding, which is not QR-alphanumeric), every
# alphanumeric punctuation character, and a short code that makes a version 1 symbol.
PAYLOAD_72 = "HEARTH1:" + base64.b32encode(bytes(range(40))).decode().rstrip("=")
PAYLOAD_61 = "HEARTH1:" + base64.b32encode(bytes.fromhex("02" + "ab" * 32)).decode().rstrip("=")
PAYLOAD_PUNCT = "HEARTH1: $%*+-./:0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PAYLOAD_SHORT = "HEARTH1:ABC"
DRIVERS = [("ssd1306", None), ("sh1106", 128), ("ssd1327", None)]


def _frame_png(tmp_path: Path, driver: str, height: int | None, payload: str, age: float | None) -> Path:
    device = make_device(driver, height=height, simulate=True)
    panel = Panel(device.width, device.height)
    present(device, render(PairingPage(payload), panel, age=age, stale_after=30.0))
    path = FrameRecorder(tmp_path / "frames", keep=0).record_device(device)
    assert path is not None
    return path


def _upscaled(path: Path, factor: int, bezel: int = 0) -> Path:
    with Image.open(path) as frame:
        big = frame.convert("L").resize((frame.width * factor, frame.height * factor),
                                        Image.Resampling.NEAREST)
    if bezel:
        # the panel's unlit surround, as the camera sees it
        big = ImageOps.expand(big, border=bezel, fill=0)
    out = path.with_name(f"{path.stem}-x{factor}-b{bezel}.png")
    big.save(out)
    return out


@pytest.mark.parametrize("age", [None, 120.0], ids=["fresh", "stale"])
@pytest.mark.parametrize("payload", [PAYLOAD_76, PAYLOAD_72, PAYLOAD_61, PAYLOAD_PUNCT, PAYLOAD_SHORT],
                         ids=["pairing-76", "base32-72", "base32-61", "punct", "short"])
@pytest.mark.parametrize(("driver", "height"), DRIVERS, ids=[d for d, _ in DRIVERS])
def test_pairing_qr_decodes_from_the_panel(tmp_path: Path, driver: str, height: int | None, payload: str,
                                           age: float | None) -> None:
    path = _frame_png(tmp_path, driver, height, payload, age)
    with Image.open(path) as saved:
        frame = saved.convert("L")
    assert frame.size in ((128, 64), (128, 128))
    for factor in (3, 4):
        assert zbar_decode(_upscaled(path, factor)) == payload
    assert zbar_decode(_upscaled(path, 4, bezel=40)) == payload

    # Geometry measured from the pixels: finder patterns give px per module and width.
    rows = finder_rows(frame)
    assert rows, "no finder pattern in the frame"
    unit = min(r.unit for r in rows)
    assert all(r.unit == unit for r in rows)
    assert unit >= MIN_QR_SCALE
    left, right = min(r.left for r in rows), max(r.right for r in rows)
    top = min(r.y for r in rows) - 2 * unit  # rows cross the finder's 3-module core
    modules = (right - left + 1) // unit
    assert (right - left + 1) % unit == 0
    version = (modules - 17) // 4
    assert 1 <= version <= MAX_QR_VERSION
    assert version == make_pairing_qr(payload).version

    # The largest integer scale that leaves one module of quiet zone, unless the page is
    # stale and had to make room for the marker.
    panel = Panel(*frame.size)
    expected = pairing_layout(panel, modules, stale=age is not None)
    assert (unit, left, top) == (expected.scale, expected.x, expected.y)
    if age is None:
        assert unit == min(panel.size) // (modules + 2)

    # Quiet zone: lit all round, 4 modules wide where the panel has room, >= 1 module.
    size = modules * unit
    ring = 4 * unit
    box = (max(0, left - ring), max(0, top - ring), min(panel.width, left + size + ring),
           min(panel.height, top + size + ring))
    assert min(left, top, panel.width - left - size, panel.height - top - size) >= unit
    zone = frame.crop(box)
    zone.paste(255, (left - box[0], top - box[1], left - box[0] + size, top - box[1] + size))
    assert zone.getextrema() == (255, 255), "a dark pixel inside the quiet zone"


@pytest.mark.parametrize("panel", [PANEL_128X64, PANEL_128X128], ids=["128x64", "128x128"])
def test_stale_pairing_page_shows_a_marker_outside_the_quiet_zone(panel: Panel) -> None:
    modules = len(make_pairing_qr(PAYLOAD_76).matrix)
    fresh = render(PairingPage(PAYLOAD_76, caption=""), panel)
    stale = render(PairingPage(PAYLOAD_76, caption=""), panel, age=300.0, stale_after=30.0)
    layout = pairing_layout(panel, modules, stale=True)
    quiet = 4 * layout.scale
    outside = stale.convert("L")
    outside.paste(255, (layout.x - quiet, layout.y - quiet, layout.x + layout.size + quiet,
                        layout.y + layout.size + quiet))
    assert outside.getextrema()[0] == 0, "no marker pixels outside the symbol's quiet zone"
    fresh_outside = fresh.convert("L")
    fresh_layout = qr_layout(panel, modules)
    q = 4 * fresh_layout.scale
    fresh_outside.paste(255, (fresh_layout.x - q, fresh_layout.y - q, fresh_layout.x + fresh_layout.size + q,
                              fresh_layout.y + fresh_layout.size + q))
    assert fresh_outside.getextrema() == (255, 255)


def test_oversize_payload_is_refused_clearly() -> None:
    payload = "HEARTH1:" + "A" * 70  # 78 characters: version 4 at level L
    with pytest.raises(QRPayloadError, match=r"78 characters and needs QR version 4.*at most \(77"):
        make_pairing_qr(payload)
    with pytest.raises(QRPayloadError):
        render(PairingPage(payload), PANEL_128X128)


@pytest.mark.parametrize("payload", ["hearth1:abc", "HEARTH1:ABC=", "HEARTH1:\u00c9", ""])
def test_non_alphanumeric_payload_is_refused(payload: str) -> None:
    with pytest.raises(QRPayloadError):
        make_pairing_qr(payload)


def test_capacity_table_matches_segno() -> None:
    for version, capacity in ALNUM_CAPACITY_L.items():
        assert segno.make_qr("A" * capacity, error="L", mode="alphanumeric").version == version
        assert segno.make_qr("A" * (capacity + 1), error="L", mode="alphanumeric").version == version + 1
    assert make_pairing_qr("A" * ALNUM_CAPACITY_L[MAX_QR_VERSION]).version == MAX_QR_VERSION


def test_layout_uses_the_largest_scale_with_a_quiet_module() -> None:
    for version in (1, 2, 3):
        modules = 17 + 4 * version
        for panel in (PANEL_128X64, PANEL_128X128):
            layout = qr_layout(panel, modules)
            assert layout.scale >= MIN_QR_SCALE
            assert (modules + 2) * layout.scale <= min(panel.size) < (modules + 2) * (layout.scale + 1)
            assert layout.quiet_modules >= 1
    with pytest.raises(QRPayloadError, match="does not fit"):
        qr_layout(PANEL_128X64, 33)  # version 4 at 2 px would be 66 px
