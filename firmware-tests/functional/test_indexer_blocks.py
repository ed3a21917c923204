"""The backfill's block source against a real regtest bitcoind: REST binary blocks when
``rest=1`` (the framework's nodes, as the box's bitcoin.conf), JSON-RPC when it is off,
the same bytes either way."""

from __future__ import annotations

import asyncio

import pytest

from appliance.chain import hex_str_to_hash
from appliance.indexer.blocks import BlockSource
from appliance.node import BitcoinRPC, NodeError
from functional.framework.node import NodeFactory, TestNode

pytestmark = pytest.mark.node


def fetch(node: TestNode, hashes: list[bytes]) -> tuple[list[bytes | None], bool]:
    async def main() -> tuple[list[bytes | None], bool]:
        async with BitcoinRPC(node.rpc_url, cookie_file=node.cookie_file) as rpc:
            source = BlockSource(rpc)
            try:
                return await source.many(hashes), source.rest
            finally:
                source.close()
    return asyncio.run(main())


def truth(node: TestNode, heights: range) -> list[bytes]:
    return [bytes.fromhex(node.getblock(node.getblockhash(h), 0)) for h in heights]


@pytest.mark.parametrize("rest", [True, False], ids=["rest", "rpc"])
def test_blocks_are_bitcoinds_bytes(node_factory: NodeFactory, rest: bool) -> None:
    node = node_factory.create(prune=False, extra_args=[] if rest else ["-rest=0"])
    hashes = [hex_str_to_hash(node.getblockhash(h)) for h in range(190, 201)]
    unknown = bytes(32)
    got, on = fetch(node, [*hashes[:5], unknown, *hashes[5:]])
    assert on is rest  # REST off: found out on the first block, then JSON-RPC batches
    want = truth(node, range(190, 201))
    if rest:
        assert got == [*want[:5], None, *want[5:]]  # an unknown block: None, no error
    else:
        assert got == [None, *want[1:5], None, *want[5:]]  # the probing request gave None


def test_a_pruned_block_is_none_for_the_rpc_path(node_factory: NodeFactory) -> None:
    node = node_factory.create(prune=True)
    node.mine(700)  # -fastprune: the early block files can go
    assert node.prune_to(node.getblockcount() - 288) > 1
    got, on = fetch(node, [hex_str_to_hash(node.getblockhash(1)),
                           hex_str_to_hash(node.getblockhash(node.getblockcount()))])
    assert on and got[0] is None and got[1] == truth(node, range(node.getblockcount(),
                                                                 node.getblockcount() + 1))[0]


def test_bitcoind_away_is_a_node_error(node_factory: NodeFactory) -> None:
    node = node_factory.create(prune=False)
    block = hex_str_to_hash(node.getblockhash(1))
    node.stop()
    with pytest.raises(NodeError):
        fetch(node, [block])
