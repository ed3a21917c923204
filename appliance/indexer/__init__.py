"""The personal indexer: only the paired wallets' scripts, driven by bitcoind's ZMQ."""
