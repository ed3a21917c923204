"""Tests for appliance.status (the package makes the shared helpers importable)."""
