"""The size of a largest clique, exactly, on the graphs a window's tracks make (pure logic, no I/O).

A count cut short (a greedy group, a step budget) depends on the order it explores vertices, so
one person could change it by more than 1, where the differential-privacy noise assumes 1: the
search must be exact (docs/analytics.md, "How long counting takes"). The graphs are large and
sparse (thousands of short tracks when the tracker's table churns, each seen with at most a
few hundred others), so the search runs as PMC does for such graphs (Rossi et al., 2015): core
numbers in a degeneracy order, a greedy clique as the first bound, only the vertices whose core
can beat it, and then, for each of them, a branch and bound over its later neighbours. Inside
a neighbourhood the bound is a greedy colouring (Tomita's MCQ, on bitsets as in San Segundo's
BBMC).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TypeVar

V = TypeVar("V", bound=Hashable)
Graph = Mapping[V, AbstractSet[V]]
"""Vertex ``v``'s neighbours are ``graph[v]``: symmetric, no vertex its own neighbour."""

WHOLE_GRAPH = 256
"""Vertices (of the cores that can beat the first bound) up to which one search covers them all."""

GREEDY_SEEDS = 64
"""Vertices of the highest cores a greedy clique is grown from, for the first bound."""


def clique_number(graph: Graph[V]) -> int:
    """The most vertices that are all neighbours pairwise."""
    if not graph:
        return 0
    core, order = degeneracy(graph)
    best = 1 if len(order) <= WHOLE_GRAPH else _greedy_bound(graph, core, order)
    # A clique larger than ``best`` has only vertices of core >= best. Bit i is the i-th of them
    # from the end of ``order``: the densest cores first, which the colouring then takes first.
    kept = [v for v in reversed(order) if core[v] >= best]
    nbr = _bitsets(graph, kept)
    if len(kept) <= WHOLE_GRAPH:
        return _search(nbr, (1 << len(kept)) - 1, best)
    # Every clique has an earliest vertex in ``order`` (the highest bit i of it here); its other
    # members are that vertex's later neighbours (lower bits), of which it has at most its core.
    for i, v in enumerate(kept):
        if core[v] + 1 <= best:
            break
        later = nbr[i] & ((1 << i) - 1)
        if later.bit_count() + 1 <= best:
            continue
        best = 1 + _search(nbr, later, best - 1)
    return best


def degeneracy(graph: Graph[V]) -> tuple[dict[V, int], list[V]]:
    """Each vertex's core number, and the order a least-degree-first peeling removes them in
    (Matula and Beck's bucket queue: linear in the edges)."""
    degree = {v: len(others) for v, others in graph.items()}
    buckets: list[set[V]] = [set() for _ in range(max(degree.values(), default=0) + 1)]
    for v, d in degree.items():
        buckets[d].add(v)
    core: dict[V, int] = {}
    order: list[V] = []
    k = d = 0
    for _ in range(len(graph)):
        while not buckets[d]:
            d += 1
        v = buckets[d].pop()
        k = max(k, d)
        core[v] = k
        order.append(v)
        for u in graph[v]:
            if u not in core:
                du = degree[u]
                buckets[du].discard(u)
                degree[u] = du - 1
                buckets[du - 1].add(u)
        d = max(d - 1, 0)
    return core, order


def _greedy_bound(graph: Graph[V], core: dict[V, int], order: list[V]) -> int:
    """The largest of the cliques grown greedily (highest core first) from the last
    ``GREEDY_SEEDS`` vertices of ``order``, the densest first: a clique, so a valid first bound.
    One of the highest core + 1 cannot be beaten, so the seeds stop there (a crowd of 1,200
    seen in one frame took 64 quadratic walks for nothing)."""
    best, most = 1, core[order[-1]] + 1
    for v in reversed(order[-GREEDY_SEEDS:]):
        size, joining = 1, set(graph[v])
        while joining:
            u = max(joining, key=core.__getitem__)
            joining &= graph[u]
            size += 1
        best = max(best, size)
        if best == most:
            break
    return best


def _bitsets(graph: Graph[V], vertices: list[V]) -> list[int]:
    """The subgraph on ``vertices``, vertex ``vertices[i]`` as bit i."""
    index = {v: i for i, v in enumerate(vertices)}
    inside = index.keys()
    return [sum(1 << index[u] for u in inside & graph[v]) for v in vertices]


@dataclass(slots=True)
class _Branch:
    """One level of the search: the clique so far, the vertices that may join it, and those
    left to try, by ascending colour (``bounds``: each one's colour number)."""

    size: int
    candidates: int
    verts: list[int]
    bounds: list[int]


def _search(nbr: list[int], candidates: int, floor: int) -> int:
    """The clique number of the subgraph on the bits of ``candidates`` (``nbr``: each vertex's
    neighbour bitset), or ``floor`` if that is larger (branches that cannot beat it are cut).
    An explicit stack: a large clique cannot reach Python's recursion limit."""
    best = floor
    stack = [_Branch(0, candidates, *_colour(candidates, nbr))]
    while stack:
        top = stack[-1]
        if not top.verts or top.size + top.bounds[-1] <= best:
            stack.pop()
            continue
        v = top.verts.pop()
        top.bounds.pop()
        joining = top.candidates & nbr[v]
        top.candidates &= ~(1 << v)
        if joining:
            stack.append(_Branch(top.size + 1, joining, *_colour(joining, nbr)))
        elif top.size + 1 > best:
            best = top.size + 1
    return best


def _colour(cand: int, nbr: list[int]) -> tuple[list[int], list[int]]:
    """Greedy colouring of ``cand``: its vertices by ascending colour, and each one's colour
    number, which bounds the clique among it and the vertices before it."""
    verts: list[int] = []
    bounds: list[int] = []
    colour = 0
    left = cand
    while left:
        colour += 1
        free = left
        while free:
            low = free & -free
            v = low.bit_length() - 1
            verts.append(v)
            bounds.append(colour)
            left &= ~low
            free &= ~low & ~nbr[v]
    return verts, bounds
