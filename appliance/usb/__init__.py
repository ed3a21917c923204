"""USB export of the box's own secret, the recovery phrase, and restore (docs/usb-backup.md)."""
