"""Windows: clock alignment, one vote per person, k suppression and merging, frame figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.analytics.dp import BudgetAccountant
from agent.analytics.settings import AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker, TrackView
from agent.analytics.windows import FrameCounters, LifetimeHistogram, WindowAggregator, WindowReport
from agent.clock import FakeClock
from agent.emotions import EMOTIONS

from .faces import face, seeded, sway

T0 = 1_700_000_040.0  # 40 s into a minute: 1_700_000_020 is not aligned, 1_700_000_040 = 28333334 min


def cfg(**kw: object) -> AnalyticsConfig:
    return AnalyticsConfig.model_validate(kw)


def people_frames(tracker: Tracker, labels: list[str | None], t: float) -> list[TrackView]:
    """One frame with one face per label, laid out on a row so each keeps its own track. Each
    head sways by 0.2 face widths as people's do (a face that never moves is a poster)."""
    faces = [
        face(x=0.02 + 0.09 * i + sway(t), w=0.05, label=lab, reason="blurred" if lab is None else None)
        for i, lab in enumerate(labels)
    ]
    return tracker.update(faces, t)


def run(
    agg: WindowAggregator,
    tracker: Tracker,
    labels: list[str | None],
    start: float,
    seconds: float,
    *,
    fps: float = 5.0,
) -> None:
    for i in range(int(seconds * fps)):
        t = start + i / fps
        agg.add_frame(t, people_frames(tracker, labels, t), FrameCounters(lifetimes_ms=(20.0,)))


def test_window_start_is_floor_of_t_over_length(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(window_seconds=60), clock)
    assert agg.window_start(1_700_000_039.9) == 1_699_999_980
    assert agg.window_start(1_700_000_040.0) == 1_700_000_040
    assert 1_700_000_040 % 60 == 0


def test_one_person_over_many_frames_is_one_vote_per_window(clock: FakeClock) -> None:
    """Five people filmed for three minutes at 5 fps: 5 people per window, not 1,500."""
    agg = WindowAggregator(cfg(window_seconds=60, min_people=5), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    labels: list[str | None] = ["happy", "happy", "sad", "neutral", "angry"]
    run(agg, tracker, labels, T0, 180)
    reports = agg.poll(T0 + 180)
    assert [r.window_start for r in reports] == [int(T0), int(T0) + 60, int(T0) + 120]
    for r in reports:
        assert r.people == 5
        assert r.votes == {
            "angry": 1,
            "disgust": 0,
            "fear": 0,
            "happy": 2,
            "sad": 1,
            "surprise": 0,
            "neutral": 1,
        }
        assert r.shares_pm == {
            "angry": 200,
            "disgust": 0,
            "fear": 0,
            "happy": 400,
            "sad": 200,
            "surprise": 0,
            "neutral": 200,
        }
        assert r.frames_captured == r.frames_analysed == 300
        assert r.lifetime_count == 300
        assert (r.lifetime_max_ms, r.lifetime_p99_ms) == (20, 20)
        assert r.suppressed is None


def test_valence_and_arousal_are_circumplex_means_times_1000(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=2), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad"], T0, 10)
    (r,) = agg.flush(T0 + 10)
    # happy 8° -> (990, 139); sad 208° -> (-883, -469); means (53.5 -> 54, -165)
    assert (r.valence_milli, r.arousal_milli) == (54, -165)
    assert r.complete is False


def test_abstained_people_are_counted_by_reason_and_do_not_vote(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=2), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "happy", None], T0, 10)
    (r,) = agg.flush(T0 + 60)
    assert r.people == 3
    assert r.abstained == {
        "too_small": 0,
        "blurred": 1,
        "too_dark": 0,
        "too_bright": 0,
        "turned": 0,
        "other": 0,
    }
    assert r.votes is not None
    assert sum(r.votes.values()) == 2
    assert r.complete is True


def test_below_k_suppresses_the_breakdown_and_the_exact_count(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=5), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy"] * 4, T0, 30)
    (r,) = agg.poll(T0 + 60)
    body = r.to_body()
    assert body["suppressed"] == "below_k"
    assert body["people"] is None
    assert body["votes"] is None
    assert body["shares_pm"] is None
    assert body["valence_milli"] is None
    assert body["frames"] is None  # frame figures vary with the number of faces
    assert body["lifetime_ms"] is None
    assert (r.frames_captured, r.frames_analysed, r.frames_dropped) == (150, 150, 0)  # audit log only


def test_k_counts_voters_so_abstentions_cannot_unmask_one_vote(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=3), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["angry", None, None, None], T0, 5)
    (r,) = agg.flush(T0 + 60)
    assert r.suppressed == "below_k"
    assert r.votes is None


def test_merge_carries_small_windows_into_the_first_that_reaches_k_people(clock: FakeClock) -> None:
    """Windows of 2, 2 and 5 people with k = 5: two merged windows, then the union. k is the
    fewest distinct people all the voters' tracks could be: the 2 + 2 + 5 tracks were never more
    than 5 at one time, so they could be 5 people, and only the third window (5 seen together)
    reaches k. The cells count the fewest people per emotion: the first window's happy person
    could be one of the third's two happy ones, its sad one the third's sad one."""
    agg = WindowAggregator(cfg(min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(forget_seconds=2), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad"], T0, 10)
    run(agg, tracker, ["fear", "fear"], T0 + 60, 10)
    run(agg, tracker, ["happy", "happy", "sad", "neutral", "neutral"], T0 + 120, 10)
    reports = agg.poll(T0 + 180)
    assert [r.suppressed for r in reports] == ["merged", "merged", None]
    last = reports[2]
    assert last.covers_from == int(T0)
    assert last.window_start == int(T0) + 120
    assert last.votes == {
        "angry": 0,
        "disgust": 0,
        "fear": 2,
        "happy": 2,
        "sad": 1,
        "surprise": 0,
        "neutral": 2,
    }
    assert [r.frames_analysed for r in reports] == [50, 50, 50]


def test_windows_of_a_few_people_each_never_reach_k_by_merging(clock: FakeClock) -> None:
    """2, 2 and 3 people in three windows, never more than 3 at one time: they could be 3
    people, so k = 5 is never reached, however many windows are merged (before, the sum of
    the cells, 5, published them)."""
    agg = WindowAggregator(cfg(min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(forget_seconds=2), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad"], T0, 10)
    run(agg, tracker, ["fear", "fear"], T0 + 60, 10)
    run(agg, tracker, ["happy", "happy", "sad"], T0 + 120, 10)
    reports = agg.poll(T0 + 180)
    assert [r.suppressed for r in reports] == ["merged", "merged", "merged"]
    assert [r.people for r in reports] == [None, None, None]


def test_one_person_leaving_and_returning_with_other_emotions_is_one_person(clock: FakeClock) -> None:
    """One person in view 3 s, then away 6 s (longer than forget_seconds), five times in a
    minute: five tracks, each with an emotion of its own (smoothing starts afresh). They never
    overlap in time, so they could be one person: k = 5 is not reached (it was: one per cell)."""
    agg = WindowAggregator(cfg(min_people=5), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    start = float(agg.window_start(T0))
    for visit, label in enumerate(["happy", "sad", "angry", "fear", "surprise"]):
        for i in range(15):
            t = start + 9 * visit + i * 0.2
            agg.add_frame(t, tracker.update([face(x=0.4 + sway(t), w=0.05, label=label)], t), FrameCounters())
    (r,) = agg.poll(start + 60)
    assert r.suppressed == "below_k", f"one person published as {r.people} people: {r.votes}"


def _merge_run(someone_in_first: bool, clock: FakeClock) -> list[dict[str, object]]:
    """k = 5, merge: a window with one person (or nobody), then one with frames and nobody."""
    agg = WindowAggregator(cfg(min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    start = float(agg.window_start(T0))
    for i in range(50):
        t = start + i * 0.2
        faces = [face(x=0.4 + sway(t), w=0.05, label="sad")] if someone_in_first else []
        agg.add_frame(t, tracker.update(faces, t), FrameCounters())
    for i in range(50):
        t = start + 60 + i * 0.2
        agg.add_frame(t, tracker.update([], t), FrameCounters())
    return [r.to_body() for r in agg.poll(start + 60) + agg.poll(start + 120)]


def test_a_suppressed_window_does_not_tell_whether_the_merged_one_before_had_anyone(
    clock: FakeClock,
) -> None:
    """Both windows are suppressed ("merged", whether or not anyone was seen), so nothing they
    publish may differ between the two runs; covers_from did (the carried person's start)."""
    one, nobody = _merge_run(True, clock), _merge_run(False, clock)
    assert [b["suppressed"] for b in one] == ["merged", "merged"]
    assert one == nobody


def test_merge_counts_a_person_present_in_two_windows_once(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=3, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad"], T0 + 50, 20)  # the same two people span the boundary
    run(agg, tracker, ["happy", "sad", "fear"], T0 + 70, 10)  # and a third one joins
    reports = agg.poll(T0 + 120)
    assert [(r.suppressed, r.people) for r in reports] == [("merged", None), (None, 3)]


def test_flush_publishes_a_pending_merge_as_suppressed(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy"], T0, 5)
    run(agg, tracker, ["happy"], T0 + 60, 5)
    reports = agg.flush(T0 + 65)
    assert [r.suppressed for r in reports] == ["merged", "below_k"]
    assert reports[1].covers_from == int(T0)
    agg.add_frame(T0 + 120, [], FrameCounters())
    assert agg.flush(T0 + 121)[0].covers_from == int(T0) + 120  # the carry was not kept


def test_quiet_minutes_still_report_their_frame_figures(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(), clock)
    assert agg.poll(T0) == []
    (r,) = agg.poll(T0 + 61)
    assert (r.window_start, r.frames_captured, r.suppressed) == (int(T0), 0, "below_k")


@pytest.mark.parametrize("opened_before", [False, True])
def test_the_window_a_run_began_in_says_it_is_only_a_part(clock: FakeClock, opened_before: bool) -> None:
    """A restart 3 s before a window's end published that window as complete, the same
    ``window_start`` as the stopped run's part: a consumer keyed on it replaced the real
    breakdown with 3 s of figures labelled whole (found by an integrator's trial). Whether a
    frame opened the window before the run said where it began does not matter."""
    agg = WindowAggregator(cfg(), clock)
    if opened_before:
        agg.add_frame(T0 + 57, [], FrameCounters(captured=1))
    agg.counting_from(T0 + 57)
    agg.add_frame(T0 + 58, [], FrameCounters(captured=1))
    (first,) = agg.poll(T0 + 60)
    (second,) = agg.poll(T0 + 120)
    assert (first.window_start, first.complete) == (int(T0), False)
    assert (second.window_start, second.complete) == (int(T0) + 60, True)


def test_a_partial_first_window_merged_into_the_next_is_not_called_complete(clock: FakeClock) -> None:
    """The carry dropped the flag: the merged report covered T0..T0+120 as complete, though
    the run counted only from T0+50 (found by review)."""
    agg = WindowAggregator(cfg(min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(forget_seconds=2), clock, rng=seeded(0))
    agg.counting_from(T0 + 50)
    run(agg, tracker, ["happy", "sad"], T0 + 50, 10)  # 2 people: below k, carried on
    run(agg, tracker, ["happy", "happy", "sad", "neutral", "neutral"], T0 + 60, 10)
    _, merged = agg.poll(T0 + 120)
    assert merged.covers_from == int(T0)
    assert not merged.complete


def _scene(agg: WindowAggregator, tracker: Tracker, labels_at: Callable[[float], list[str | None]],
           start: float, seconds: float) -> None:
    """Frames at 5 fps, each with the faces ``labels_at(t)`` and one frame from the camera."""
    for i in range(int(seconds * 5)):
        t = start + i / 5
        agg.add_frame(t, people_frames(tracker, labels_at(t), t), FrameCounters(captured=1, analysed=1))


@pytest.mark.parametrize("someone", [False, True])
def test_suppressed_windows_after_a_partial_one_say_complete_whoever_was_in_it(
    clock: FakeClock, someone: bool
) -> None:
    """The carry kept the partial flag, and a carry exists only if someone was seen: every
    suppressed window after it said complete: false when one person had been in the run's
    first seconds, true when nobody had, with DP on too (found by a privacy review)."""
    agg = WindowAggregator(cfg(window_seconds=10, min_people=5, small_window="merge"), clock)
    tracker = Tracker(TrackerConfig(forget_seconds=2), clock, rng=seeded(0))
    agg.counting_from(T0 + 3)
    _scene(agg, tracker, lambda t: ["happy"] if someone and t < T0 + 6 else [], T0 + 3, 37)
    reports = agg.poll(T0 + 40)
    assert [r.suppressed is not None for r in reports] == [True] * 4
    assert [r.complete for r in reports] == [False, True, True, True]


def test_one_person_who_abstains_is_a_difference_the_rule_withholds(clock: FakeClock) -> None:
    """The rule compared voters only, but people and abstained are published: five voters,
    then the same five and one turned face, were both published (people 5 then 6, abstained 0
    then 1; found by a privacy review)."""
    agg = WindowAggregator(cfg(window_seconds=10, min_people=5), clock)
    tracker = Tracker(TrackerConfig(forget_seconds=2), clock, rng=seeded(0))
    five: list[str | None] = ["happy", "happy", "neutral", "neutral", "sad"]
    _scene(agg, tracker, lambda t: five + ([None] if T0 + 10.5 <= t < T0 + 19 else []), T0, 30)
    first, second, third = agg.poll(T0 + 30)
    assert (first.suppressed, first.people) == (None, 5)
    assert second.suppressed == "differencing"
    assert third.suppressed is None


def test_a_run_that_began_on_a_windows_start_calls_it_whole(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(), clock)
    agg.counting_from(T0)
    assert agg.poll(T0) == []
    (first,) = agg.poll(T0 + 60)
    assert first.complete


def test_a_window_closes_when_a_later_frame_arrives(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(), clock)
    agg.add_frame(T0 + 1, [], FrameCounters(captured=3, analysed=1, dropped=2, lifetimes_ms=(5.2, 80.0)))
    agg.add_frame(T0 + 61, [], FrameCounters())
    (r,) = agg.poll(T0 + 61)
    assert (r.frames_captured, r.frames_analysed, r.frames_dropped) == (3, 1, 2)
    assert (r.lifetime_count, r.lifetime_max_ms, r.lifetime_p99_ms) == (2, 80, 80)


def test_lifetime_p99_is_nearest_rank_in_whole_ms_rounded_up() -> None:
    hist = LifetimeHistogram()
    for ms in range(1, 201):
        hist.add(ms - 0.5)
    assert hist.percentile(99) == 198
    assert hist.max_ms == 200
    assert LifetimeHistogram().percentile(99) == 0


def test_report_body_is_integers_strings_bools_and_none_only(clock: FakeClock) -> None:
    agg = WindowAggregator(cfg(min_people=2), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad", "fear"], T0, 5)
    (r,) = agg.flush(T0 + 60)

    def leaves(obj: object) -> list[object]:
        if isinstance(obj, dict):
            return [x for v in obj.values() for x in leaves(v)]
        return [obj]

    body = r.to_body()
    assert all(isinstance(v, int | str | bool) or v is None for v in leaves(body))
    assert not any(isinstance(v, float) for v in leaves(body))
    assert set(body["votes"]) == set(EMOTIONS)  # type: ignore[arg-type]


def test_dp_on_needs_noise_and_accountant(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="needs a noise source and a budget accountant"):
        WindowAggregator(cfg(dp={"enabled": True}), clock)


def test_flush_closes_only_an_open_window_and_dp_off_means_no_noise(clock: FakeClock, tmp_path: Path) -> None:
    agg = WindowAggregator(cfg(), clock, accountant=BudgetAccountant(tmp_path, 1.0))
    assert agg.flush(T0) == []
    agg.add_frame(T0, [], FrameCounters())
    (r,) = agg.flush(T0)
    assert isinstance(r, WindowReport)
    assert r.noise is False
    assert r.epsilon_micro is None


def test_a_track_votes_once_with_its_latest_smoothed_emotion(clock: FakeClock) -> None:
    """Sad for 2 frames then happy for 8: one vote, for happy (the life-long mean at the end)."""
    agg = WindowAggregator(cfg(min_people=2), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    for i in range(10):
        t = T0 + i * 0.2
        label = "sad" if i < 2 else "happy"
        dx = sway(t, 0.1)
        views = tracker.update([face(x=0.1 + dx, label=label), face(x=0.6 + dx, label="fear")], t)
        agg.add_frame(t, views, FrameCounters())
    (r,) = agg.flush(T0 + 60)
    assert r.votes is not None
    assert (r.votes["happy"], r.votes["sad"], r.votes["fear"], r.people) == (1, 0, 1, 2)


def test_merge_does_not_carry_empty_windows(clock: FakeClock) -> None:
    """A quiet night in merge mode: empty windows are below k, and the morning starts afresh."""
    agg = WindowAggregator(cfg(min_people=2, small_window="merge"), clock)
    agg.poll(T0)
    night = agg.poll(T0 + 60) + agg.poll(T0 + 120)
    assert [r.suppressed for r in night] == ["below_k", "below_k"]
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    run(agg, tracker, ["happy", "sad"], T0 + 120, 5)
    (r,) = agg.poll(T0 + 180)
    assert (r.suppressed, r.people, r.covers_from) == (None, 2, int(T0) + 120)
