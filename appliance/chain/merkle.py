"""Bitcoin merkle trees: block roots, Electrum branches, checkpoint (cp_height) proofs.

All hashes are 32-byte internal-order values (txids, or header hashes for the
checkpoint tree); Electrum sends each branch element as ``hash_to_hex_str(h)``.
A level with an odd number of nodes pairs its last node with itself, as bitcoind
does, so every function here works for any leaf count >= 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "MerkleTree",
    "merkle_branch",
    "merkle_branch_and_root",
    "merkle_root",
    "merkle_root_and_mutation",
    "root_from_branch",
    "verify_merkle_branch",
]

_sha256 = hashlib.sha256


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    """Parent level; ``level`` must already have an even length."""
    sha = _sha256
    return [sha(sha(level[i] + level[i + 1]).digest()).digest() for i in range(0, len(level), 2)]


def _check_leaves(hashes: Sequence[bytes]) -> None:
    if not hashes:
        raise ValueError("a merkle tree needs at least one leaf")


def _check_index(index: int, count: int) -> None:
    if not 0 <= index < count:
        raise IndexError(f"leaf index {index} out of range for {count} leaves")


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Merkle root of ``hashes`` (internal order); one leaf is its own root."""
    return merkle_root_and_mutation(hashes)[0]


def merkle_root_and_mutation(hashes: Sequence[bytes]) -> tuple[bytes, bool]:
    """(root, mutated) like bitcoind's ``ComputeMerkleRoot``.

    ``mutated`` flags two equal sibling hashes anywhere in the tree (CVE-2012-2459):
    such a tx list has the same root as a shorter one, so a block built from it must
    be treated as invalid even though its merkle root matches.
    """
    _check_leaves(hashes)
    level = list(hashes)
    mutated = False
    while len(level) > 1:
        # Compare real siblings before padding: the odd-count duplicate is legitimate.
        for i in range(0, len(level) - 1, 2):
            if level[i] == level[i + 1]:
                mutated = True
        if len(level) & 1:
            level.append(level[-1])
        level = _next_level(level)
    return level[0], mutated


def merkle_branch_and_root(hashes: Sequence[bytes], index: int) -> tuple[list[bytes], bytes]:
    """Branch (siblings from leaf to root) for leaf ``index``, plus the root. O(n).

    This is the shape Electrum uses both for ``blockchain.transaction.get_merkle``
    (leaves = the block's txids) and for ``cp_height`` header proofs (leaves = header
    hashes of heights 0..cp_height). Only one level is held at a time.
    """
    _check_leaves(hashes)
    _check_index(index, len(hashes))
    level = list(hashes)
    branch: list[bytes] = []
    while len(level) > 1:
        if len(level) & 1:
            level.append(level[-1])
        branch.append(level[index ^ 1])
        index >>= 1
        level = _next_level(level)
    return branch, level[0]


def merkle_branch(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The Electrum ``merkle`` list for leaf ``index`` (internal order; hex-encode reversed)."""
    return merkle_branch_and_root(hashes, index)[0]


def root_from_branch(leaf: bytes, branch: Sequence[bytes], index: int) -> bytes:
    """Fold ``branch`` onto ``leaf`` at position ``index`` and return the implied root."""
    if index < 0 or index >> len(branch):
        raise IndexError(f"leaf index {index} out of range for a {len(branch)}-level branch")
    sha = _sha256
    node = leaf
    for sibling in branch:
        if index & 1:
            node = sha(sha(sibling + node).digest()).digest()
        else:
            node = sha(sha(node + sibling).digest()).digest()
        index >>= 1
    return node


def verify_merkle_branch(leaf: bytes, branch: Sequence[bytes], index: int, root: bytes) -> bool:
    """True if ``branch`` proves ``leaf`` sits at ``index`` under ``root``."""
    try:
        return root_from_branch(leaf, branch, index) == root
    except IndexError:
        return False


class MerkleTree:
    """A fully built tree, for answering many branch queries over one leaf set.

    Building costs about n hashes and keeps every level (~2n hashes of memory), after
    which ``branch(i)`` is O(log n) with no hashing. Right for a block's txids; for the
    whole header chain prefer :func:`merkle_branch_and_root` or cache per cp_height.
    """

    __slots__ = ("_leaf_count", "_levels")

    def __init__(self, hashes: Sequence[bytes]) -> None:
        _check_leaves(hashes)
        level = list(hashes)
        levels = [level]
        while len(level) > 1:
            if len(level) & 1:
                # Padding is stored in the level so branch() can read siblings directly.
                level.append(level[-1])
            level = _next_level(level)
            levels.append(level)
        self._levels = levels
        self._leaf_count = len(hashes)

    def __len__(self) -> int:
        return self._leaf_count

    @property
    def root(self) -> bytes:
        """The merkle root (internal order)."""
        return self._levels[-1][0]

    @property
    def mutated(self) -> bool:
        """``merkle_root_and_mutation``'s flag: two equal real siblings at some level
        (an odd level's padding duplicate does not count)."""
        real = self._leaf_count
        for level in self._levels[:-1]:
            for i in range(0, real - 1, 2):
                if level[i] == level[i + 1]:
                    return True
            real = (real + 1) // 2
        return False

    @property
    def depth(self) -> int:
        """Number of hashing levels, i.e. the length of every branch."""
        return len(self._levels) - 1

    def branch(self, index: int) -> list[bytes]:
        """Sibling hashes from leaf ``index`` up to the root (internal order)."""
        _check_index(index, self._leaf_count)
        branch: list[bytes] = []
        for level in self._levels[:-1]:
            branch.append(level[index ^ 1])
            index >>= 1
        return branch
