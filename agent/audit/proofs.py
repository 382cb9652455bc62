"""Consistency proofs from a kept right edge, so the device never needs its purged leaves.

A witness checks each new checkpoint against the last one it cosigned with an RFC 9162
consistency proof. Every node such a proof takes from the old tree is one of the old tree's
right-edge subtrees (or their fold), so the edge kept at the last published checkpoint plus
the leaf hashes appended since are enough: O(log n) state and the new leaves, never the log's
whole history (which retention deletes).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.audit.merkle import CompactRange, _split, node_hash, root_of


class _Tree:
    """MTH of any range that the proof recursion asks for, over an edge + new leaves."""

    def __init__(self, old: CompactRange, new_leaves: Sequence[bytes]) -> None:
        self.m = old.size
        self.leaves = list(new_leaves)
        self.nodes: list[tuple[int, int, bytes]] = []  # (start, end, hash) of the old edge
        start = 0
        for bit in range(old.size.bit_length() - 1, -1, -1):
            width = 1 << bit
            if old.size & width:
                self.nodes.append((start, start + width, old.hashes[len(self.nodes)]))
                start += width

    def mth(self, lo: int, hi: int) -> bytes:
        if lo >= self.m:
            return root_of(self.leaves[lo - self.m : hi - self.m])
        if hi <= self.m:
            inside = [h for s, e, h in self.nodes if lo <= s and e <= hi]
            covered = sum(e - s for s, e, _ in self.nodes if lo <= s and e <= hi)
            if covered != hi - lo or not inside:
                raise ValueError(f"range [{lo}, {hi}) is not made of the old tree's edge")
            acc = inside[-1]
            for left in reversed(inside[:-1]):
                acc = node_hash(left, acc)
            return acc
        k = _split(hi - lo)
        return node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        """RFC 9162 §2.1.4.1 SUBPROOF(m, D[lo:hi], b) over absolute leaf indexes."""
        n = hi - lo
        if m == n:
            return [] if complete else [self.mth(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, complete), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def consistency_from_edge(old: CompactRange, new_leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(old.size, D[old.size + len(new_leaves)]) from the old edge and the new leaf hashes."""
    if old.size == 0:
        raise ValueError("no consistency proof from an empty tree")
    tree = _Tree(old, new_leaves)
    return tree.subproof(old.size, 0, old.size + len(new_leaves), True)


def extended(old: CompactRange, new_leaves: Sequence[bytes]) -> CompactRange:
    """The edge after appending ``new_leaves``."""
    edge = old.copy()
    for leaf in new_leaves:
        edge.append(leaf)
    return edge
