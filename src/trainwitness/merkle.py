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

from .errors import CommitmentError

__all__ = ["leaf_hash", "node_hash", "merkle_root", "InclusionProof", "inclusion_proof", "verify_inclusion"]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    # Bottom-up over the level list; pairing left to right and carrying an odd last node up
    # unchanged yields exactly the RFC's recursive split at the largest power of two.
    level = list(hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root hash of ``leaves`` (raw leaf data, hashed here with the leaf prefix)."""
    if not leaves:
        return EMPTY_ROOT
    return _root_of_hashes([leaf_hash(leaf) for leaf in leaves])


@dataclass(frozen=True)
class InclusionProof:
    index: int
    tree_size: int
    path: tuple[bytes, ...]  # sibling hashes, leaf level first


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return _path(hashes[:k], index) + [_root_of_hashes(hashes[k:])]
    return _path(hashes[k:], index - k) + [_root_of_hashes(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} outside a tree of {len(leaves)} leaves")
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return InclusionProof(index=index, tree_size=len(leaves), path=tuple(_path(hashes, index)))


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
