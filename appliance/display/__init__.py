"""The OLED display process: picks the page from the status bus (:mod:`.service`)."""
