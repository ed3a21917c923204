"""The box's own hardware: the OLED (``oled``, ``pages``, ``frames``) and the button (``button``).

Nothing is imported here on purpose: each device service imports only the module it
needs, so a process that never draws (the USB watcher) never loads Pillow or luma, and
nothing imports ``RPi.GPIO`` until a real pin is opened. See ``docs/display.md``.
"""

__all__: list[str] = []
