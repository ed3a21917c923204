"""Pairing: the QR payload, the whitelist of client keys, and the pairing window."""
