"""appliance.devices.oled: luma devices per driver, real controller code over a recording
I2C bus, the dummy device for simulation, and dimming through the contrast command."""

from __future__ import annotations

import pytest
from luma.core.device import dummy
from PIL import Image

from appliance.devices.oled import DRIVERS, Dimmer, OledError, PanelState, make_device, present
from appliance.devices.pages import Panel, SyncPage, render

from .util import RecordingBus

SETCONTRAST = 0x81
DISPLAYOFF, DISPLAYON = 0xAE, 0xAF
# luma.oled 3.16 calls Image.getdata(), which Pillow 13 deprecates (removal in Pillow 14);
# this is luma's code, exercised on purpose, so only that warning is let through here.
LUMA_GETDATA = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_simulated_device_has_the_drivers_size_and_mode(driver: str) -> None:
    device = make_device(driver, simulate=True)
    spec = DRIVERS[driver]
    assert isinstance(device, dummy)
    assert device.size == spec.sizes[0] and device.mode == spec.mode
    frame = render(SyncPage(blocks=1, headers=2, progress=0.5, peers=3), Panel(*device.size))
    present(device, frame)
    shown: Image.Image = getattr(device, "image")  # noqa: B009  # the dummy's, not in OledDevice
    assert shown.size == frame.size and shown.mode == spec.mode
    assert shown.convert("1").tobytes() == frame.tobytes()


def test_rotated_dummy_keeps_the_panel_orientation() -> None:
    device = make_device("ssd1306", rotate=2, simulate=True)
    frame = Image.new("1", (128, 64), 0)
    frame.putpixel((0, 0), 1)
    present(device, frame)
    shown: Image.Image = getattr(device, "image")  # noqa: B009  # the dummy's, not in OledDevice
    assert shown.getpixel((127, 63)) and not shown.getpixel((0, 0))


@LUMA_GETDATA
@pytest.mark.parametrize(("driver", "height"), [("ssd1306", None), ("sh1106", None), ("sh1106", 128),
                                                ("ssd1309", None), ("ssd1327", None)])
def test_real_controller_code_talks_i2c(driver: str, height: int | None) -> None:
    bus = RecordingBus()
    device = make_device(driver, height=height, i2c_address=0x3D, bus=bus)
    assert type(device).__name__ == DRIVERS[driver].luma_class
    assert {address for address, _, _ in bus.writes} == {0x3D}
    commands = bus.commands()
    assert commands[0] == DISPLAYOFF and DISPLAYON in commands  # luma's init sequence ran
    before = len(bus.data_bytes())
    present(device, render(SyncPage(blocks=1, headers=2, progress=0.5, peers=3), Panel(*device.size)))
    frame_bytes = bus.data_bytes()[before:]
    assert any(frame_bytes), "a frame with lit pixels sent no lit bytes"
    per_pixel = 8 if DRIVERS[driver].mode == "1" else 2  # 1 bit vs 4-bit grey per pixel
    assert len(frame_bytes) <= device.width * device.height // per_pixel * 2


@LUMA_GETDATA
def test_dimmer_sends_contrast_commands_to_the_controller() -> None:
    bus = RecordingBus()
    clock = Clock()
    device = make_device("ssd1306", bus=bus)
    dimmer = Dimmer(device, level=0xCF, dim_level=0x08, dim_after=60.0, off_after=600.0, clock=clock)

    def contrasts() -> list[int]:
        out, cmds = [], bus.commands()
        for i, byte in enumerate(cmds[:-1]):
            if byte == SETCONTRAST:
                out.append(cmds[i + 1])
        return out

    start = contrasts()
    assert start[-1] == 0xCF
    clock.now += 59.0
    assert dimmer.tick() is PanelState.AWAKE and contrasts() == start
    clock.now += 1.0
    assert dimmer.tick() is PanelState.DIM and contrasts() == start + [0x08]
    dimmer.tick()
    assert contrasts() == start + [0x08], "an idle tick must not resend the contrast"
    assert dimmer.activity() is True  # it was dim: the caller may treat this press as wake-only
    assert dimmer.state is PanelState.AWAKE and contrasts() == start + [0x08, 0xCF]
    assert dimmer.activity() is False
    clock.now += 600.0
    assert dimmer.tick() is PanelState.OFF and bus.commands()[-1] == DISPLAYOFF
    assert dimmer.activity() is True
    assert DISPLAYON in bus.commands()[-3:] and contrasts()[-1] == 0xCF


def test_dimmer_on_the_dummy_tracks_the_level() -> None:
    clock = Clock()
    dimmer = Dimmer(make_device("ssd1327", simulate=True), level=0x7F, dim_level=0x05, dim_after=10,
                    clock=clock)
    assert (dimmer.state, dimmer.level) == (PanelState.AWAKE, 0x7F)
    clock.now += 10
    assert dimmer.tick() is PanelState.DIM and dimmer.level == 0x05
    dimmer.activity()
    assert dimmer.level == 0x7F


def test_dimmer_rejects_nonsense() -> None:
    device = make_device(simulate=True)
    with pytest.raises(ValueError):
        Dimmer(device, level=300)
    with pytest.raises(ValueError):
        Dimmer(device, dim_after=60, off_after=10)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown OLED driver 'ssd1351'"):
        make_device("ssd1351", simulate=True)
    with pytest.raises(ValueError, match="no layout for 128x32"):
        make_device("ssd1306", height=32, simulate=True)
    with pytest.raises(ValueError, match="rotate must be 0 or 2"):
        make_device("ssd1306", rotate=1, simulate=True)
    assert make_device("ssd1327", rotate=1, simulate=True).size == (128, 128)
    with pytest.raises(ValueError, match="outside 0x03..0x77"):
        make_device(i2c_address=0x80, simulate=True)


def test_missing_i2c_bus_gives_a_helpful_error() -> None:
    with pytest.raises(OledError, match=r"/dev/i2c-99 at 0x3C.*i2cdetect -y 99"):
        make_device("ssd1306", i2c_port=99)


def test_present_checks_the_frame_size() -> None:
    with pytest.raises(ValueError, match="frame is 128x128, the panel 128x64"):
        present(make_device(simulate=True), Image.new("1", (128, 128)))
