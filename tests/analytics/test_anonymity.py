"""Cells, shares and circumplex means: properties that hold for any counts."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.analytics import anonymity
from agent.analytics.anonymity import (
    ABSTAIN_REASONS,
    VALENCE_AROUSAL_MILLI,
    largest_group,
    mean_valence_arousal,
    shares_per_mille,
    tally,
)
from agent.analytics.tracker import TrackHandle, TrackView
from agent.emotions import EMOTIONS

counts = st.dictionaries(st.sampled_from(EMOTIONS), st.integers(min_value=0, max_value=10**6), min_size=1)


@given(counts)
def test_shares_sum_to_1000_and_each_is_within_one_of_exact(votes: dict[str, int]) -> None:
    shares = shares_per_mille(votes)
    total = sum(votes.values())
    if total == 0:
        assert set(shares.values()) == {0}
        return
    assert sum(shares.values()) == 1000
    for label, n in votes.items():
        assert abs(shares[label] - 1000 * n / total) < 1


@given(counts)
def test_circumplex_means_stay_on_the_disc_and_match_the_float_mean(votes: dict[str, int]) -> None:
    result = mean_valence_arousal(votes)
    total = sum(votes.values())
    if total == 0:
        assert result is None
        return
    assert result is not None
    val, aro = result
    exact_v = sum(n * VALENCE_AROUSAL_MILLI[k][0] for k, n in votes.items()) / total
    exact_a = sum(n * VALENCE_AROUSAL_MILLI[k][1] for k, n in votes.items()) / total
    assert abs(val - exact_v) <= 0.5
    assert abs(aro - exact_a) <= 0.5
    assert val * val + aro * aro <= 1000 * 1000 + 2000


def test_tally_puts_each_confirmed_person_in_exactly_one_cell() -> None:
    def view(emotion: str | None, reason: str | None, confirmed: bool = True) -> TrackView:
        return TrackView(TrackHandle(), 3, confirmed, emotion, None, reason)

    cells = tally(
        [view("happy", None), view(None, "blurred"), view(None, "sneezing"), view("sad", None, False)],
        {},
    )
    assert cells.votes == dict.fromkeys(EMOTIONS, 0) | {"happy": 1}
    assert cells.abstained == dict.fromkeys(ABSTAIN_REASONS, 0) | {"blurred": 1, "other": 1}
    assert (cells.voters, cells.people) == (1, 3)


def _moon_moser(n: int) -> tuple[list[TrackHandle], dict[TrackHandle, set[TrackHandle]]]:
    """Every track seen with every other but the two of its own triple: the graph with the most
    maximal groups (3^(n/3)), whose largest group takes one track of each triple."""
    hs = [TrackHandle() for _ in range(n)]
    return hs, {h: {g for j, g in enumerate(hs) if j // 3 != i // 3} for i, h in enumerate(hs)}


def test_the_largest_group_of_a_worst_case_graph_is_found_without_hanging_the_loop() -> None:
    """45 tracks took 19 s, 64 would take hours, in the frame loop (found by a privacy review);
    the search now stops after ``MAX_STEPS`` with the largest group found (here the right one).
    Run apart with a limit of 5 s, far above the ~20 ms it takes, so a hang fails instead of
    stalling the suite."""
    hs, together = _moon_moser(45)
    found: list[int] = []
    worker = threading.Thread(target=lambda: found.append(largest_group(set(hs), together)), daemon=True)
    worker.start()
    worker.join(timeout=5.0)
    assert found == [15]


def test_a_search_cut_short_still_never_counts_more_people_than_there_can_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(anonymity, "MAX_STEPS", 3)
    hs, together = _moon_moser(30)
    assert 1 <= largest_group(set(hs), together) <= 10
