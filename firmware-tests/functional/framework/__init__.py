"""Test framework: real regtest bitcoind nodes, RPC for ground truth, wait helpers."""
