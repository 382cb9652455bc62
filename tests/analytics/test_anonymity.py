"""Cells, shares and circumplex means: properties that hold for any counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.analytics.anonymity import (
    ABSTAIN_REASONS,
    VALENCE_AROUSAL_MILLI,
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
