"""Consistency proofs from a kept right edge equal the RFC's, computed from every leaf."""

from __future__ import annotations

import hashlib

import pytest

from agent.audit.merkle import CompactRange, consistency_proof, leaf_hash, root_of, verify_consistency
from agent.audit.proofs import consistency_from_edge, extended


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


@pytest.mark.parametrize("n", range(2, 41))
def test_edge_proof_equals_the_full_tree_proof_for_every_old_size(n: int) -> None:
    leaves = _leaves(n)
    for m in range(1, n):
        edge = extended(CompactRange(), leaves[:m])
        proof = consistency_from_edge(edge, leaves[m:])
        assert proof == consistency_proof(leaves, m)
        assert verify_consistency(m, n, root_of(leaves[:m]), root_of(leaves), proof)


def test_a_rewritten_old_leaf_breaks_the_proof() -> None:
    leaves = _leaves(13)
    forged = [*leaves[:4], leaf_hash(b"rewritten"), *leaves[5:]]
    edge = extended(CompactRange(), forged[:7])
    proof = consistency_from_edge(edge, forged[7:])
    assert not verify_consistency(7, 13, root_of(leaves[:7]), root_of(forged), proof)


def test_no_proof_from_an_empty_tree() -> None:
    with pytest.raises(ValueError, match="empty tree"):
        consistency_from_edge(CompactRange(), _leaves(3))
