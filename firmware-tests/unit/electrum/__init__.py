"""Tests for appliance.electrum (the package makes the shared fakes importable)."""
