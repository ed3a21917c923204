"""The button process: presses to commands (:mod:`.service`); the state machine is in
``appliance.devices.button``."""
