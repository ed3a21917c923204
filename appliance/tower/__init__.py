"""The watchtower: punishes a revoked Lightning commitment within a second of seeing it.

Two ways in: Electrum's own tower protocol (``get_ctn``/``add_sweep_tx``, plain sweep
transactions) and TEOS/BOLT-13 encrypted appointments (the tower learns nothing until a
breach happens). One watcher serves both: every transaction bitcoind announces, from the
mempool or a block, is one LevelDB point lookup by its 16-byte locator.
"""
