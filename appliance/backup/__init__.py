"""The channel-state backup agent: paired clients' encrypted backups, kept on the box.

``store`` (files: append-only logs + snapshots), ``wire`` (the request protocol over a
Noise stream), ``sealed`` (the clients' encryption to a public key), ``server`` (the
Noise listener and request handling), ``export`` (one consistent file for the USB
backup), ``service`` (the process). See ``docs/backup.md``.
"""
