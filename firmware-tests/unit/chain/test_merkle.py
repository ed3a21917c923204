"""Merkle roots, Electrum branches and checkpoint proofs, against a naive reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.chain.encoding import double_sha256, hash_to_hex_str, hex_str_to_hash
from appliance.chain.merkle import (
    MerkleTree,
    merkle_branch,
    merkle_branch_and_root,
    merkle_root,
    merkle_root_and_mutation,
    root_from_branch,
    verify_merkle_branch,
)

# Mainnet block 100000: its four txids and header merkle root (display hex).
BLOCK_100000_TXIDS = [
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
]
BLOCK_100000_ROOT = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"


def _leaves(count: int) -> list[bytes]:
    return [double_sha256(i.to_bytes(4, "little")) for i in range(count)]


def _reference_root(hashes: list[bytes]) -> bytes:
    """The textbook recursive definition, written independently of the module."""
    if len(hashes) == 1:
        return hashes[0]
    if len(hashes) % 2:
        hashes = [*hashes, hashes[-1]]
    return _reference_root(
        [double_sha256(hashes[i] + hashes[i + 1]) for i in range(0, len(hashes), 2)]
    )


def test_block_100000() -> None:
    txids = [hex_str_to_hash(h) for h in BLOCK_100000_TXIDS]
    root = merkle_root(txids)
    assert hash_to_hex_str(root) == BLOCK_100000_ROOT
    for index, txid in enumerate(txids):
        branch = merkle_branch(txids, index)
        assert verify_merkle_branch(txid, branch, index, root)
    # Electrum's "merkle" list for tx 2 is [txid 3, hash(txid 0 + txid 1)], display hex.
    assert [hash_to_hex_str(h) for h in merkle_branch(txids, 2)] == [
        BLOCK_100000_TXIDS[3],
        hash_to_hex_str(double_sha256(txids[0] + txids[1])),
    ]


def test_single_leaf() -> None:
    leaf = double_sha256(b"coinbase")
    assert merkle_root([leaf]) == leaf
    assert merkle_branch_and_root([leaf], 0) == ([], leaf)
    assert verify_merkle_branch(leaf, [], 0, leaf)
    tree = MerkleTree([leaf])
    assert (tree.root, tree.depth, tree.branch(0), len(tree)) == (leaf, 0, [], 1)


def test_odd_count_duplicates_last() -> None:
    a, b, c = _leaves(3)
    ab = double_sha256(a + b)
    cc = double_sha256(c + c)
    assert merkle_root([a, b, c]) == double_sha256(ab + cc)
    assert merkle_branch([a, b, c], 2) == [c, ab]  # the last leaf's sibling is itself


@pytest.mark.parametrize("count", [*range(1, 34), 100, 255, 256, 257, 1000])
def test_branches_match_reference(count: int) -> None:
    leaves = _leaves(count)
    root = _reference_root(leaves)
    tree = MerkleTree(leaves)
    depth = (count - 1).bit_length()
    assert merkle_root(leaves) == tree.root == root
    assert tree.depth == depth
    indexes = range(count) if count <= 64 else [0, 1, count // 2, count - 2, count - 1]
    for index in indexes:
        branch, branch_root = merkle_branch_and_root(leaves, index)
        assert branch_root == root
        assert len(branch) == depth
        assert tree.branch(index) == branch == merkle_branch(leaves, index)
        assert root_from_branch(leaves[index], branch, index) == root
        assert verify_merkle_branch(leaves[index], branch, index, root)
        other = leaves[index - 1] if count > 1 else double_sha256(b"x")
        if other != leaves[index]:
            assert not verify_merkle_branch(other, branch, index, root)
        if count > 1 and branch[0] != leaves[index]:
            # (A last odd leaf is its own sibling, so there bit 0 of the index is moot.)
            assert not verify_merkle_branch(leaves[index], branch, index ^ 1, root)


def test_checkpoint_style_header_proof() -> None:
    # cp_height: leaves are header hashes for heights 0..cp_height, proving `height`.
    headers = _leaves(1001)  # heights 0..1000
    height = 777
    branch, root = merkle_branch_and_root(headers, height)
    assert root == _reference_root(headers)
    assert verify_merkle_branch(headers[height], branch, height, root)


def test_out_of_range() -> None:
    leaves = _leaves(5)
    for bad in (-1, 5):
        with pytest.raises(IndexError):
            merkle_branch(leaves, bad)
        with pytest.raises(IndexError):
            MerkleTree(leaves).branch(bad)
    with pytest.raises(ValueError):
        merkle_root([])
    with pytest.raises(ValueError):
        MerkleTree([])
    branch = merkle_branch(leaves, 4)
    with pytest.raises(IndexError):
        root_from_branch(leaves[4], branch, 1 << len(branch))
    assert not verify_merkle_branch(leaves[4], branch, 1 << len(branch), merkle_root(leaves))
    assert not verify_merkle_branch(leaves[4], branch, -1, merkle_root(leaves))


def test_mutation_detection() -> None:
    a, b, c = _leaves(3)
    root, mutated = merkle_root_and_mutation([a, b, c])
    assert not mutated
    # Duplicating the last leaf of an odd level yields the same root: CVE-2012-2459.
    assert merkle_root_and_mutation([a, b, c, c]) == (root, True)
    assert merkle_root_and_mutation([a, a])[1]
    assert not merkle_root_and_mutation([a])[1]
    assert not merkle_root_and_mutation([a, b, c, a])[1]  # equal but not siblings


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70), st.data())
def test_branch_property(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    branch, root = merkle_branch_and_root(leaves, index)
    assert root == _reference_root(leaves) == MerkleTree(leaves).root
    assert MerkleTree(leaves).branch(index) == branch
    assert verify_merkle_branch(leaves[index], branch, index, root)
