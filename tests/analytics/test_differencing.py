"""Differencing: two published windows must not differ by fewer than k people.

The attack (issue 13): people who stay vote the same way each window, so {happy 2, neutral 3}
then {happy 2, sad 1, neutral 3} gives away the newcomer's sad.
"""

from __future__ import annotations

from agent.analytics.settings import AnalyticsConfig
from agent.analytics.tracker import Tracker
from agent.analytics.windows import FrameCounters, WindowAggregator, WindowReport
from agent.clock import FakeClock

from .faces import face, seeded, sway

T0 = 1_700_000_040.0  # a minute boundary
STAYERS = ["happy", "happy", "neutral", "neutral", "neutral"]


def replay(agg: WindowAggregator, windows: list[list[str]], seconds: float = 20.0) -> list[WindowReport]:
    """One list of labels per 60 s window; each label is a person at its own place in the row,
    present ``seconds`` at the start of the window, head swaying as people's do."""
    tracker = Tracker(AnalyticsConfig().tracker, FakeClock(), rng=seeded(3))
    for w, labels in enumerate(windows):
        for i in range(int(seconds * 5)):
            t = T0 + 60 * w + i / 5
            faces = [face(x=0.02 + 0.09 * j + sway(t), w=0.05, label=lab) for j, lab in enumerate(labels)]
            agg.add_frame(t, tracker.update(faces, t), FrameCounters())
    # a long gap between windows would let the tracker forget the stayers: keep them seen
    return agg.poll(T0 + 60 * len(windows))


def continuous(agg: WindowAggregator, windows: list[list[str]]) -> list[WindowReport]:
    return replay(agg, windows, seconds=60.0)


def test_the_newcomer_window_is_withheld_by_default() -> None:
    agg = WindowAggregator(AnalyticsConfig(min_people=5), FakeClock())
    first, second = continuous(agg, [STAYERS, [*STAYERS, "sad"]])
    assert first.suppressed is None
    assert first.votes is not None
    assert (first.votes["happy"], first.votes["neutral"]) == (2, 3)
    assert (second.suppressed, second.votes, second.people) == ("differencing", None, None)
    assert second.to_body()["frames"] is None


def test_without_the_rule_the_newcomer_is_given_away() -> None:
    """The attack the rule stops, replayed with the rule off: the difference is one sad vote."""
    agg = WindowAggregator(AnalyticsConfig(min_people=5, differencing="off"), FakeClock())
    first, second = continuous(agg, [STAYERS, [*STAYERS, "sad"]])
    assert first.votes is not None
    assert second.votes is not None
    diff = {k: second.votes[k] - first.votes[k] for k in first.votes if second.votes[k] != first.votes[k]}
    assert diff == {"sad": 1}


def test_k_newcomers_or_the_same_people_publish() -> None:
    """Five more people is a group of k: comparing the windows shows only a group's votes. The
    same people again publish (nobody joined or left)."""
    agg = WindowAggregator(AnalyticsConfig(min_people=5), FakeClock())
    more = [*STAYERS, "sad", "sad", "angry", "happy", "fear"]
    reports = continuous(agg, [STAYERS, more, more])
    assert [r.suppressed for r in reports] == [None, None, None]
    assert [r.people for r in reports] == [5, 10, 10]


def test_one_person_leaving_is_withheld_too() -> None:
    agg = WindowAggregator(AnalyticsConfig(min_people=5), FakeClock())
    reports = continuous(agg, [[*STAYERS, "sad"], STAYERS])
    assert [r.suppressed for r in reports] == [None, "differencing"]


def test_merge_mode_carries_the_newcomer_until_k_people_changed() -> None:
    """merge: the newcomer window is carried; the union is published once k people joined."""
    agg = WindowAggregator(AnalyticsConfig(min_people=5, differencing="merge"), FakeClock())
    reports = continuous(
        agg,
        [STAYERS, [*STAYERS, "sad"], [*STAYERS, "sad", "angry", "angry", "fear", "surprise"]],
    )
    assert [r.suppressed for r in reports] == [None, "merged", None]
    last = reports[2]
    assert last.covers_from == int(T0) + 60
    assert last.people == 10


def test_with_dp_on_the_noise_covers_differencing_and_the_rule_is_off() -> None:
    """The rule decides on exact counts, which noise must not be combined with; DP bounds what
    any number of windows reveal (epsilon per window, the daily budget)."""
    cfg = AnalyticsConfig(min_people=5, dp={"enabled": True})
    assert WindowAggregator(cfg, FakeClock(), dp=_Zero(), accountant=_Budget()).differencing == "off"


class _Zero:
    def sample(self, epsilon: float) -> int:
        return 0


class _Budget:
    def try_spend(self, epsilon: float, window_start: int) -> bool:
        return True

    def remaining_micro(self, window_start: int) -> int:
        return 0
