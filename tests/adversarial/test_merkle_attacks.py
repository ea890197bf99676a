"""Attacks on the Merkle layer: every forged inclusion claim fails ``verify_inclusion``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwitness.commit.merkle import InclusionProof, MerkleTree, leaf_hash, merkle_root, node_hash, verify_inclusion
from trainwitness.errors import CommitmentError

from ..support.merkle_forgers import (
    bitcoin_style_root,
    different_index_proof,
    inner_node_as_leaf,
    proof_for_other_tree_size,
)

sizes = st.integers(min_value=2, max_value=70)


def _leaves(n: int) -> list[bytes]:
    return [b"leaf-%d" % i for i in range(n)]


def test_honest_proofs_verify_for_every_index() -> None:
    for n in range(1, 40):
        tree = MerkleTree(_leaves(n))
        for i in range(n):
            verify_inclusion(tree.root, _leaves(n)[i], tree.proof(i))


@settings(max_examples=200, deadline=None)
@given(n=sizes, data=st.data())
def test_verify_rejects_inner_node_presented_as_leaf(n: int, data: st.DataObject) -> None:
    leaf, proof, root = inner_node_as_leaf(_leaves(n), data.draw(st.integers(0, n - 2)))
    with pytest.raises(CommitmentError):
        verify_inclusion(root, leaf, proof)


@settings(max_examples=200, deadline=None)
@given(n=sizes, data=st.data())
def test_verify_rejects_proof_for_a_different_index(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    leaf, proof, root = different_index_proof(_leaves(n), i, j)
    with pytest.raises(CommitmentError):
        verify_inclusion(root, leaf, proof)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=70).filter(lambda n: n % 2 == 1))
def test_duplicated_last_leaf_changes_the_root(n: int) -> None:
    """CVE-2012-2459: Bitcoin's pairing gives [a, b, c] and [a, b, c, c] one root; RFC 9162's split does not."""
    leaves = _leaves(n)
    if n > 1:
        assert bitcoin_style_root(leaves) == bitcoin_style_root([*leaves, leaves[-1]])  # the attack is real there
    assert merkle_root([*leaves, leaves[-1]]) != merkle_root(leaves)


def _path_length(size: int, index: int) -> int:
    return len(MerkleTree(_leaves(size)).proof(index).path)


@settings(max_examples=200, deadline=None)
@given(n=sizes, delta=st.integers(min_value=-1, max_value=40).filter(lambda d: d != 0), data=st.data())
def test_verify_rejects_proof_against_a_tree_size_of_another_shape(n: int, delta: int, data: st.DataObject) -> None:
    """A proof re-labelled with another tree size fails whenever that size gives the leaf another path.

    Where the shapes coincide (leaf 0 of 3 vs of 4) the check passes: ``verify_inclusion`` trusts the
    size it is given, which is why the verifier takes every tree size from the signed statement and
    checks it against the store (see ``merkle-different-leaf-count`` in test_forgeries.py).
    """
    i = data.draw(st.integers(0, n - 1))
    claimed = n + delta
    if 0 <= i < claimed and _path_length(claimed, i) == _path_length(n, i):
        return
    leaf, proof, root = proof_for_other_tree_size(_leaves(n), i, claimed)
    with pytest.raises(CommitmentError):
        verify_inclusion(root, leaf, proof)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(a + b) != node_hash(a, b)


def test_proof_with_non_hash_entries_is_rejected() -> None:
    tree = MerkleTree(_leaves(4))
    proof = tree.proof(1)
    bad = InclusionProof(proof.index, proof.tree_size, (proof.path[0][:31],) + proof.path[1:])
    with pytest.raises(CommitmentError):
        verify_inclusion(tree.root, _leaves(4)[1], bad)
