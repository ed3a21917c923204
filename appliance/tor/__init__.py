"""The box as a Tor onion service (issue #17): key derivation, torrc, the tor program."""
