"""RFC 9162 tree: the right edge gives the recursive root; proofs verify and tampering fails."""

from __future__ import annotations

import hashlib

import pytest

from agent.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(40)]


def test_empty_tree_root_is_hash_of_empty_string() -> None:
    assert CompactRange().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(1, 41))
def test_right_edge_root_equals_recursive_root_and_keeps_one_hash_per_set_bit(n: int) -> None:
    tree = CompactRange()
    for leaf in LEAVES[:n]:
        tree.append(leaf)
    assert tree.root() == root_of(LEAVES[:n])
    assert len(tree.hashes) == n.bit_count()
    resumed = CompactRange(tree.size, tree.hashes)
    resumed.append(leaf_hash(b"next"))
    assert resumed.root() == root_of([*LEAVES[:n], leaf_hash(b"next")])


def test_right_edge_refuses_a_wrong_number_of_hashes() -> None:
    with pytest.raises(ValueError, match="tree of 3 leaves has 2 hashes, found 1"):
        CompactRange(3, [LEAVES[0]])


def test_inclusion_proofs_verify_for_every_leaf_and_fail_when_altered() -> None:
    for n in range(1, 18):
        root = root_of(LEAVES[:n])
        for m in range(n):
            proof = inclusion_proof(LEAVES[:n], m)
            assert verify_inclusion(LEAVES[m], m, n, proof, root)
            assert not verify_inclusion(LEAVES[(m + 1) % 40], m, n, proof, root)
            if proof:
                bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
                assert not verify_inclusion(LEAVES[m], m, n, bad, root)


def test_consistency_proofs_verify_between_all_sizes_and_fail_for_a_fork() -> None:
    forked = [*LEAVES[:5], leaf_hash(b"forged"), *LEAVES[6:]]
    for n in range(1, 18):
        for m in range(1, n + 1):
            proof = consistency_proof(LEAVES[:n], m)
            assert verify_consistency(m, n, root_of(LEAVES[:m]), root_of(LEAVES[:n]), proof)
            if m > 5:
                assert not verify_consistency(m, n, root_of(forked[:m]), root_of(LEAVES[:n]), proof)


def test_known_answer_two_leaves() -> None:
    """MTH of two entries computed by hand from the RFC definitions."""
    a, b = b"a", b"b"
    la = hashlib.sha256(b"\x00a").digest()
    lb = hashlib.sha256(b"\x00b").digest()
    assert root_of([leaf_hash(a), leaf_hash(b)]) == hashlib.sha256(b"\x01" + la + lb).digest()
