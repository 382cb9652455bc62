"""max_clique: exact on every path it takes (one search under ``WHOLE_GRAPH`` vertices; peeled
cores and one search per vertex above), since the DP sensitivity of 1 needs the exact count."""

from __future__ import annotations

import itertools
import random

import pytest

from agent.analytics import max_clique
from agent.analytics.max_clique import WHOLE_GRAPH, _bitsets, _search, clique_number

from .faces import seeded


def random_graph(n: int, share: float, rng: random.Random) -> dict[int, set[int]]:
    graph: dict[int, set[int]] = {v: set() for v in range(n)}
    for a, b in itertools.combinations(range(n), 2):
        if rng.random() < share:
            graph[a].add(b)
            graph[b].add(a)
    return graph


def brute_force(graph: dict[int, set[int]]) -> int:
    for size in range(len(graph), 0, -1):
        for group in itertools.combinations(graph, size):
            if all(b in graph[a] for a, b in itertools.combinations(group, 2)):
                return size
    return 0


def one_search(graph: dict[int, set[int]]) -> int:
    """The plain colour-bounded search over the whole graph: the reference for large graphs."""
    vertices = list(graph)
    return _search(_bitsets(graph, vertices), (1 << len(vertices)) - 1, 0)


def test_small_graphs_match_brute_force() -> None:
    rng = seeded(1)
    for _ in range(400):
        graph = random_graph(rng.randint(0, 11), rng.random(), rng)
        assert clique_number(graph) == brute_force(graph)


@pytest.mark.parametrize("whole", [0, 1, 3])
def test_the_search_per_vertex_matches_brute_force(monkeypatch: pytest.MonkeyPatch, whole: int) -> None:
    """The path for large graphs (greedy bound, cores, one search per vertex), forced on small
    ones by lowering WHOLE_GRAPH, against brute force."""
    monkeypatch.setattr(max_clique, "WHOLE_GRAPH", whole)
    rng = seeded(4)
    for _ in range(300):
        graph = random_graph(rng.randint(0, 11), rng.random(), rng)
        assert clique_number(graph) == brute_force(graph)


def test_large_sparse_graphs_match_one_whole_search() -> None:
    """Above WHOLE_GRAPH vertices the search peels by core and starts once per vertex; a planted
    group of 30 among 600 sparse vertices, and sparse graphs with no plant, match one search."""
    rng = seeded(2)
    for planted in (0, 12, 30):
        graph = random_graph(WHOLE_GRAPH + 344, 0.03, rng)
        group = rng.sample(sorted(graph), planted)
        for a, b in itertools.combinations(group, 2):
            graph[a].add(b)
            graph[b].add(a)
        found = clique_number(graph)
        assert found == one_search(graph)
        assert found >= planted


def test_one_persons_vertices_change_a_large_graph_by_at_most_one() -> None:
    """People of 1-3 tracks never seen together (one box per face per frame), 300 of them in
    60 frames of 30: removing anyone changes the count by 0 or 1."""
    rng = seeded(3)
    people = [list(range(3 * p, 3 * p + rng.randint(1, 3))) for p in range(300)]
    graph: dict[int, set[int]] = {t: set() for p in people for t in p}
    for _ in range(60):
        frame = [rng.choice(p) for p in rng.sample(people, 30)]
        for a, b in itertools.combinations(frame, 2):
            graph[a].add(b)
            graph[b].add(a)
    assert len(graph) > WHOLE_GRAPH
    full = clique_number(graph)
    for person in rng.sample(people, 25):
        rest = {t: others - set(person) for t, others in graph.items() if t not in person}
        assert full - clique_number(rest) in (0, 1)


def test_an_empty_graph_and_lone_vertices() -> None:
    assert clique_number({}) == 0
    assert clique_number({1: set(), 2: set()}) == 1
