"""Moved to :mod:`appliance.tls` (the tower and the setup page use it too).

Kept only for ``appliance/indexer/service.py`` and rootfs-overlay's firstboot, whose
owners switch their import next; then this file goes."""

from __future__ import annotations

from ..tls import (
    certificate_fingerprint,
    ensure_certificate,
    make_certificate,
    server_ssl_context,
)

__all__ = ["certificate_fingerprint", "ensure_certificate", "make_certificate", "server_ssl_context"]
