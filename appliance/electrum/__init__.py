"""The Electrum protocol server: one protocol core, several listeners (TCP, TLS, Noise).

Layers, each its own module: ``framing`` (bytes -> lines), ``jsonrpc`` (lines -> messages),
``handlers`` (the method table per protocol version), ``session`` (one connection,
transport-agnostic), ``server`` (``SessionManager`` and the TCP/TLS ``ElectrumServer``),
``tls`` (the device certificate); ``errors`` holds every error code and ``backend`` the
``ElectrumBackend`` interface the indexer implements.

Nothing is re-exported here, so the indexer can import ``appliance.electrum.backend``
without loading the server; import from the modules.
"""

__all__: list[str] = []
