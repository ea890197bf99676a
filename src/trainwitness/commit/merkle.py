"""Merkle trees in the shape of RFC 9162 (Certificate Transparency v2), section 2.1.

Leaf hash ``SHA-256(0x00 || leaf)``, inner node ``SHA-256(0x01 || left || right)``, so a leaf can never
be read as an inner node (nor the reverse). A tree of n leaves splits at the largest power of two
below n; there is no duplication of a last odd leaf (the CVE-2012-2459 flaw), so the root binds the
leaf count. Inclusion proofs verify standalone from (root, index, tree size, leaf, proof).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from trainwitness.errors import CommitmentError

__all__ = ["EMPTY_ROOT", "leaf_hash", "node_hash", "MerkleTree", "StreamingMerkleRoot", "merkle_root", "InclusionProof", "inclusion_proof", "verify_inclusion"]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _levels(hashes: Sequence[bytes]) -> list[list[bytes]]:
    # Bottom-up: pair left to right and carry an odd last node up unchanged. This builds exactly the
    # RFC's recursive split at the largest power of two, and keeps every level for O(log n) proofs.
    levels = [list(hashes)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    return levels


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    path: tuple[bytes, ...]  # sibling hashes, leaf level first


class MerkleTree:
    """A tree over raw leaves, built once; ``proof(i)`` costs O(log n)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self._levels = _levels([leaf_hash(leaf) for leaf in leaves]) if leaves else []

    @property
    def root(self) -> bytes:
        return self._levels[-1][0] if self._levels else EMPTY_ROOT

    def proof(self, index: int) -> InclusionProof:
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} outside a tree of {self.size} leaves")
        path = []
        position = index
        for level in self._levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):  # a carried last node has no sibling at this level
                path.append(level[sibling])
            position >>= 1
        return InclusionProof(index=index, tree_size=self.size, path=tuple(path))


class StreamingMerkleRoot:
    """The RFC 9162 root of leaves added one at a time, in O(log n) memory.

    A stack of perfect subtrees (sizes strictly decreasing, powers of two); folding it right to left
    at the end gives the tree that splits at the largest power of two below n, as ``MerkleTree`` builds.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        size, node = 1, leaf_hash(leaf)
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, node = left_size + size, node_hash(left, node)
        self._stack.append((size, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root hash of ``leaves`` (raw leaf data, hashed here with the leaf prefix)."""
    return MerkleTree(leaves).root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    return MerkleTree(leaves).proof(index)


def verify_inclusion(root: bytes, leaf: bytes, proof: InclusionProof) -> None:
    """RFC 9162 section 2.1.3.2; raises ``CommitmentError`` unless ``leaf`` is at ``proof.index``."""
    index, size = proof.index, proof.tree_size
    if not 0 <= index < size:
        raise CommitmentError(f"inclusion proof: index {index} outside a tree of {size} leaves")
    fn, sn = index, size - 1
    result = leaf_hash(leaf)
    for sibling in proof.path:
        if len(sibling) != 32:
            raise CommitmentError("inclusion proof: a path entry is not a 32-byte hash")
        if sn == 0:
            raise CommitmentError("inclusion proof: path is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            result = node_hash(sibling, result)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise CommitmentError("inclusion proof: path is shorter than the tree is deep")
    if result != root:
        raise CommitmentError(
            f"inclusion proof: leaf {index} of {size} does not lead to the committed root"
        )
