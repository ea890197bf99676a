"""Forged Merkle inclusion claims, each returning (leaf, proof, root) that a forger would present."""

from __future__ import annotations

import hashlib

from trainwitness.commit.merkle import InclusionProof, MerkleTree, leaf_hash, node_hash


def inner_node_as_leaf(leaves: list[bytes], i: int) -> tuple[bytes, InclusionProof, bytes]:
    """Present the concatenated children of an inner node (leaves i, i+1) as one leaf one level up."""
    tree = MerkleTree(leaves)
    honest = tree.proof(i - i % 2)
    forged_leaf = leaf_hash(leaves[i - i % 2]) + leaf_hash(leaves[min(i - i % 2 + 1, len(leaves) - 1)])
    forged = InclusionProof(index=(i - i % 2) // 2, tree_size=(len(leaves) + 1) // 2, path=honest.path[1:])
    return forged_leaf, forged, tree.root


def different_index_proof(leaves: list[bytes], i: int, j: int) -> tuple[bytes, InclusionProof, bytes]:
    """Leaf i, with the proof (path and index) that was made for leaf j."""
    tree = MerkleTree(leaves)
    return leaves[i], tree.proof(j), tree.root


def proof_for_other_tree_size(leaves: list[bytes], i: int, claimed_size: int) -> tuple[bytes, InclusionProof, bytes]:
    """An honest path, presented as coming from a tree of a different leaf count."""
    tree = MerkleTree(leaves)
    proof = tree.proof(i)
    return leaves[i], InclusionProof(index=i, tree_size=claimed_size, path=proof.path), tree.root


def bitcoin_style_root(leaves: list[bytes]) -> bytes:
    """The root Bitcoin's pairing gives (an odd last node is paired with itself at every level), built
    from our leaf and node hashes: CVE-2012-2459 is that this equals the root of leaves + [last]."""
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [node_hash(level[k], level[k + 1]) for k in range(0, len(level), 2)]
    return level[0] if level else hashlib.sha256(b"").digest()
