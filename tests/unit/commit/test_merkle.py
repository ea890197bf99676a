"""RFC 9162 Merkle trees: golden bytes, an independent reference implementation, domain separation, proofs."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from trainwitness.commit.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    MerkleTree,
    StreamingMerkleRoot,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)
from trainwitness.errors import CommitmentError

SEVEN_LEAVES = [b"leaf-%d" % i for i in range(7)]


# -- an independent reference: RFC 9162 section 2.1.1 and 2.1.3.1, written recursively from the text --


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _rfc_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _largest_power_of_two_below(len(leaves))
    return hashlib.sha256(b"\x01" + _rfc_mth(leaves[:k]) + _rfc_mth(leaves[k:])).digest()


def _rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _largest_power_of_two_below(len(leaves))
    if m < k:
        return _rfc_path(m, leaves[:k]) + [_rfc_mth(leaves[k:])]
    return _rfc_path(m - k, leaves[k:]) + [_rfc_mth(leaves[:k])]


# -- golden bytes ------------------------------------------------------------------------------------


def test_root_of_seven_fixed_leaves_is_pinned() -> None:
    assert merkle_root(SEVEN_LEAVES).hex() == "0b007fb915eb9b2a146f54b1c86ec53b664f8e455b7660b0b6ee13edc0d921c0"


def test_inclusion_path_of_leaf_five_of_seven_is_pinned() -> None:
    proof = MerkleTree(SEVEN_LEAVES).proof(5)
    assert (proof.index, proof.tree_size) == (5, 7)
    assert [h.hex() for h in proof.path] == [
        "ea9fc1a1b6e191b460d0d6306e3e870c173f39330f13cda1b70cfc72bdc398ba",
        "676f3782f5b3a5fb4370ed49572cedc523f4a66322269c85f2af0509d17b0a4d",
        "bdd1c5ff55b19cb6b0e7c761bf9a6ccaa27fbbfc07b74f1fabb6e911a0bd2ab3",
    ]


def test_single_leaf_root_and_empty_root_are_pinned() -> None:
    assert merkle_root([b"a"]).hex() == "022a6979e6dab7aa5ae4c3e5e45f7e977112a7e63593820dbec1ec738a24f93c"
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_leaf_and_node_hashes_use_the_rfc_prefixes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()


# -- agreement with the reference on every size and index ------------------------------------------


def test_tree_matches_recursive_rfc9162_for_every_size_and_index() -> None:
    for size in range(1, 71):
        leaves = [b"L%d/%d" % (size, i) for i in range(size)]
        tree = MerkleTree(leaves)
        root = _rfc_mth(leaves)
        assert tree.root == root, size
        for index in range(size):
            proof = tree.proof(index)
            assert list(proof.path) == _rfc_path(index, leaves), (size, index)
            verify_inclusion(root, leaves[index], proof)


# -- domain separation and binding of the leaf count ------------------------------------------------


def test_leaf_equal_to_an_inner_node_preimage_hashes_differently() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    forged_leaf = left + right  # the bytes an inner node over (a, b) hashes, after its prefix
    assert leaf_hash(forged_leaf) != node_hash(left, right)
    assert merkle_root([forged_leaf]) != merkle_root([b"a", b"b"])


def test_duplicating_the_last_leaf_changes_the_root() -> None:
    # CVE-2012-2459: a tree that pads odd levels by duplication gives n and n+1 leaves the same root.
    for n in range(1, 20):
        leaves = [b"%d" % i for i in range(n)]
        assert merkle_root(leaves) != merkle_root(leaves + [leaves[-1]]), n


# -- inclusion proofs that must be refused ----------------------------------------------------------


def test_proof_for_a_different_leaf_is_rejected() -> None:
    tree = MerkleTree(SEVEN_LEAVES)
    with pytest.raises(CommitmentError, match="does not lead to the committed root"):
        verify_inclusion(tree.root, SEVEN_LEAVES[3], tree.proof(4))


def test_proof_at_a_different_index_is_rejected() -> None:
    tree = MerkleTree(SEVEN_LEAVES)
    with pytest.raises(CommitmentError):
        verify_inclusion(tree.root, SEVEN_LEAVES[4], replace(tree.proof(4), index=5))


def test_proof_with_a_flipped_sibling_bit_is_rejected() -> None:
    tree = MerkleTree(SEVEN_LEAVES)
    proof = tree.proof(2)
    flipped = bytes([proof.path[0][0] ^ 1]) + proof.path[0][1:]
    with pytest.raises(CommitmentError):
        verify_inclusion(tree.root, SEVEN_LEAVES[2], replace(proof, path=(flipped, *proof.path[1:])))


def test_proof_of_wrong_length_is_rejected() -> None:
    tree = MerkleTree(SEVEN_LEAVES)
    proof = tree.proof(2)
    with pytest.raises(CommitmentError, match="shorter"):
        verify_inclusion(tree.root, SEVEN_LEAVES[2], replace(proof, path=proof.path[:-1]))
    with pytest.raises(CommitmentError, match="longer"):
        verify_inclusion(tree.root, SEVEN_LEAVES[2], replace(proof, path=(*proof.path, b"\0" * 32)))


def test_proof_against_another_tree_size_is_rejected() -> None:
    # The size is trusted input beside the root (both are signed); where the size changes the path's
    # shape, a proof made for one size does not verify at another.
    tree = MerkleTree(SEVEN_LEAVES)
    for wrong_size in (8, 6 + 7):
        with pytest.raises(CommitmentError):
            verify_inclusion(tree.root, SEVEN_LEAVES[6], replace(tree.proof(6), tree_size=wrong_size))


def test_proof_index_outside_the_tree_is_rejected() -> None:
    with pytest.raises(CommitmentError, match="outside"):
        verify_inclusion(EMPTY_ROOT, b"x", InclusionProof(index=3, tree_size=3, path=()))


def test_proof_with_a_short_path_entry_is_rejected() -> None:
    tree = MerkleTree(SEVEN_LEAVES)
    proof = tree.proof(0)
    with pytest.raises(CommitmentError, match="32-byte"):
        verify_inclusion(tree.root, SEVEN_LEAVES[0], replace(proof, path=(proof.path[0][:31], *proof.path[1:])))


def test_standalone_proof_helper_agrees_with_the_tree() -> None:
    assert inclusion_proof(SEVEN_LEAVES, 6) == MerkleTree(SEVEN_LEAVES).proof(6)
    with pytest.raises(ValueError):
        MerkleTree(SEVEN_LEAVES).proof(7)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33])
def test_streaming_root_equals_rfc9162_root(n: int) -> None:
    leaves = [f"leaf {i}".encode() for i in range(n)]
    stream = StreamingMerkleRoot()
    for leaf in leaves:
        stream.add(leaf)
    assert stream.root() == merkle_root(leaves)
