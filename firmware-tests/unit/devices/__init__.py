"""Tests for appliance.devices (the package makes the shared helpers importable)."""
