"""The OLED panel: one luma device per supported controller, real (I2C) or simulated.

``make_device`` returns a luma device either way. With ``simulate=True`` it is luma's own
``luma.core.device.dummy`` of the same size and colour mode, which keeps the last frame
in ``device.image``; the drawing and ``display()`` path above it is the one the real
panel uses, only the bottom layer (the I2C bus) is gone. ``present`` pushes a frame from
``appliance.devices.pages`` to a device; ``Dimmer`` lowers the contrast after a quiet
spell and restores it on activity, through the controller's own contrast command.

On a real panel luma registers an exit hook that blanks the screen when the process
ends, so a stopped display service leaves a dark panel, never a frozen one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, cast

from PIL import Image

__all__ = [
    "DRIVERS",
    "DriverSpec",
    "Dimmer",
    "OledDevice",
    "OledError",
    "PanelState",
    "make_device",
    "present",
]


class OledError(RuntimeError):
    """The panel cannot be opened; the message says what to check."""


class OledDevice(Protocol):
    """The part of a luma device Hearth uses (luma ships no type hints)."""

    width: int
    height: int
    size: tuple[int, int]
    mode: str
    persist: bool  # True: luma's exit cleanup leaves the last frame lit

    def display(self, image: Image.Image) -> None: ...

    def contrast(self, level: int) -> None: ...

    def show(self) -> None: ...

    def hide(self) -> None: ...

    def cleanup(self) -> None: ...


@dataclass(frozen=True)
class DriverSpec:
    """A controller luma drives, the sizes Hearth lays out for it, and its colour mode."""

    luma_class: str  # class name in luma.oled.device
    sizes: tuple[tuple[int, int], ...]  # (width, height) before rotation; the first is the default
    mode: str  # "1" monochrome, "RGB" for greyscale controllers (luma converts to 4-bit grey)
    contrast: int  # luma's power-on contrast for this controller


#: Supported controllers. Sizes are limited to the ones the pages have layouts for.
DRIVERS: dict[str, DriverSpec] = {
    "ssd1306": DriverSpec("ssd1306", ((128, 64),), "1", 0xCF),
    "sh1106": DriverSpec("sh1106", ((128, 64), (128, 128)), "1", 0xCF),
    "ssd1309": DriverSpec("ssd1309", ((128, 64),), "1", 0xCF),
    "ssd1327": DriverSpec("ssd1327", ((128, 128),), "RGB", 0x7F),
}


def make_device(driver: str = "ssd1306", *, width: int | None = None, height: int | None = None,
                i2c_port: int = 1, i2c_address: int = 0x3C, rotate: int = 0, simulate: bool = False,
                bus: Any = None) -> OledDevice:
    """Open the panel (or its simulation) and return the luma device.

    ``width``/``height`` default to the driver's usual size. ``rotate`` is luma's: 0, 1, 2
    or 3 quarter turns clockwise; a 128x64 panel may only turn 0 or 2 (upside down
    mounting), since the layouts are landscape. ``bus`` is an already-open smbus-like
    object (``write_i2c_block_data``) used instead of opening ``/dev/i2c-<port>``; it
    exists so the real controller code can be exercised without the hardware.
    """
    spec = DRIVERS.get(driver)
    if spec is None:
        raise ValueError(f"unknown OLED driver {driver!r} (known: {', '.join(DRIVERS)})")
    size = (width or spec.sizes[0][0], height or spec.sizes[0][1])
    if size not in spec.sizes:
        known = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
        raise ValueError(f"{driver}: no layout for {size[0]}x{size[1]} (supported: {known})")
    if rotate not in (0, 1, 2, 3) or (size[0] != size[1] and rotate % 2):
        raise ValueError(f"{driver} {size[0]}x{size[1]}: rotate must be 0 or 2"
                         + (" (or 1, 3 on a square panel)" if size[0] == size[1] else ""))
    if not 0x03 <= i2c_address <= 0x77:
        raise ValueError(f"I2C address 0x{i2c_address:02X} is outside 0x03..0x77")
    if simulate:
        from luma.core.device import dummy

        return cast(OledDevice, dummy(width=size[0], height=size[1], rotate=rotate, mode=spec.mode))
    # Imported here so a simulated box never needs smbus2 or the controller modules.
    import luma.core.error
    import luma.oled.device
    from luma.core.interface.serial import i2c

    try:
        serial = i2c(bus=bus, port=i2c_port, address=i2c_address)
        device_class = getattr(luma.oled.device, spec.luma_class)
        kwargs: dict[str, Any] = {"width": size[0], "height": size[1], "rotate": rotate}
        if spec.mode != "1":
            kwargs["mode"] = spec.mode
        return cast(OledDevice, device_class(serial, **kwargs))
    except (luma.core.error.DeviceNotFoundError, luma.core.error.DevicePermissionError, OSError) as exc:
        raise OledError(
            f"cannot open the {driver} OLED on /dev/i2c-{i2c_port} at 0x{i2c_address:02X}: {exc} "
            f"(is I2C enabled, dtparam=i2c_arm=on? does `i2cdetect -y {i2c_port}` list the address? "
            "is the service user in the i2c group?)") from exc


def present(device: OledDevice, frame: Image.Image) -> None:
    """Show a page frame (mode "1") on ``device``, converting to a greyscale panel's mode."""
    if frame.size != device.size:
        raise ValueError(f"frame is {frame.size[0]}x{frame.size[1]}, "
                         f"the panel {device.width}x{device.height}")
    device.display(frame if frame.mode == device.mode else frame.convert(device.mode))


class PanelState(Enum):
    AWAKE = "awake"
    DIM = "dim"
    OFF = "off"


class Dimmer:
    """Contrast by idle time: full on activity, ``dim_level`` after ``dim_after`` s,
    optionally off after ``off_after`` s (an OLED's pixels wear with the hours they burn).

    Call ``activity()`` on a button press or on an event the owner must see (an error,
    a breach), and ``tick()`` on every refresh. The contrast command is only sent when the
    state changes, so an idle panel costs no I2C traffic. The dummy device accepts the
    same commands, and ``level``/``state`` say what the panel was told.
    """

    def __init__(self, device: OledDevice, *, level: int = 0xCF, dim_level: int = 0x10,
                 dim_after: float = 60.0, off_after: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("level", level), ("dim_level", dim_level)):
            if not 0 <= value <= 255:
                raise ValueError(f"{name} must be 0..255, got {value}")
        if off_after is not None and off_after < dim_after:
            raise ValueError("off_after must not be shorter than dim_after")
        self._device = device
        self._bright = level
        self._dim = dim_level
        self._dim_after = dim_after
        self._off_after = off_after
        self._clock = clock
        self._last_activity = clock()
        self.state = PanelState.AWAKE
        self.level = level
        device.contrast(level)

    def activity(self) -> bool:
        """Wake the panel; True if it was dim or off (a caller may let that press only wake it)."""
        self._last_activity = self._clock()
        was_asleep = self.state is not PanelState.AWAKE
        if self.state is PanelState.OFF:
            self._device.show()
        if was_asleep:
            self._set(PanelState.AWAKE, self._bright)
        return was_asleep

    def tick(self) -> PanelState:
        idle = self._clock() - self._last_activity
        if self._off_after is not None and idle >= self._off_after:
            if self.state is not PanelState.OFF:
                self._device.hide()
                self.state = PanelState.OFF
        elif idle >= self._dim_after and self.state is PanelState.AWAKE:
            self._set(PanelState.DIM, self._dim)
        return self.state

    def _set(self, state: PanelState, level: int) -> None:
        if level != self.level:
            self._device.contrast(level)
            self.level = level
        self.state = state
