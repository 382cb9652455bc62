"""Real motion against "k counts distinct people" (found by review): a person pacing at walking
speed is handed between a newer track and an older one whose gate had grown, so the tracks
interleave; counted by spans one person was two to four. Counted by which tracks were ever
seen in one frame together (``CoObserved``), they are one."""

from __future__ import annotations

import numpy as np

from agent.analytics.anonymity import CoObserved, fewest_people, largest_group
from agent.analytics.settings import AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker, TrackHandle, TrackView
from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.clock import FakeClock

from .faces import face, seeded

T0 = 1_700_000_040.0  # aligned to a minute
W = 0.05  # face width (frame units)
FPS = 5.0


def pacer(x0: float, y: float, speed_w: float, span_w: float):
    """A person pacing back and forth (on the phone, waiting): ``speed_w`` face widths per
    second, turning at the ends of a ``span_w``-widths stretch. Yields the box x per frame."""
    x, d, lo, hi = x0, 1.0, x0, x0 + span_w * W
    while True:
        x += d * speed_w * W / FPS
        if x > hi:
            x, d = 2 * hi - x, -1.0
        if x < lo:
            x, d = 2 * lo - x, 1.0
        yield x


def test_one_person_pacing_is_never_more_than_one_person() -> None:
    """One real face, one box per frame (A1 and A2 hold), 2 widths per frame at 5 fps (under the
    documented 2.5 widths/frame brisk walk): the tracker hands the person back and forth between
    a newer track and an older one whose gate has grown, so the person's tracks overlap in time
    and fewest_people counts one person as several."""
    tracker = Tracker(TrackerConfig(), FakeClock(), rng=seeded(0))
    walk = pacer(0.3, 0.4, speed_w=10.0, span_w=8.0)
    seen: dict[object, TrackView] = {}
    together = CoObserved()
    for i in range(int(60 * FPS)):
        t = T0 + i / FPS
        (view,) = tracker.update([face(x=next(walk), y=0.4, w=W, h=W, label="sad")], t)
        together.frame([view.handle])
        seen[view.handle] = view
    voters = [v for v in seen.values() if v.counts and v.emotion is not None]
    assert len(voters) > 1  # the tracker did hand the person between tracks
    counted = fewest_people(voters, together.together)
    assert counted == 1, f"one pacing person counted as {counted} people"


def test_two_people_pacing_reach_k_5() -> None:
    """Defaults (k = 5, suppress): two people pacing in a window must stay below k; the window
    publishes a breakdown of two people's emotions as if five or more were there."""
    clock = FakeClock()
    agg = WindowAggregator(AnalyticsConfig.model_validate({"min_people": 5}), clock)
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    a = pacer(0.05, 0.2, speed_w=12.5, span_w=12.0)
    b = pacer(0.05, 0.7, speed_w=12.5, span_w=12.0)
    for i in range(int(60 * FPS)):
        t = T0 + i / FPS
        faces = [face(x=next(a), y=0.2, w=W, h=W, label="sad"),
                 face(x=next(b), y=0.7, w=W, h=W, label="happy")]
        agg.add_frame(t, tracker.update(faces, t), FrameCounters())
    (report,) = agg.poll(T0 + 60)
    assert report.suppressed == "below_k", f"two people published as {report.people}: {report.votes}"


def handles(n: int) -> list[TrackHandle]:
    return [TrackHandle() for _ in range(n)]


def test_tracks_seen_together_in_different_frames_are_different_people() -> None:
    """A with B in one frame, B with C in another, A with C in a third: no frame held all three,
    yet they are three people (the largest group seen together pairwise, not the largest frame)."""
    a, b, c = handles(3)
    seen = CoObserved()
    for frame in ([a, b], [b, c], [a, c]):
        seen.frame(frame)
    assert largest_group({a, b, c}, seen.together) == 3


def test_one_persons_tracks_never_add_more_than_one_to_a_group() -> None:
    """Removing one person (all of their tracks, never seen together) changes the count by at
    most one, over random scenes: the sensitivity the k and DP arguments need."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        people = [handles(int(rng.integers(1, 4))) for _ in range(int(rng.integers(1, 8)))]
        seen = CoObserved()
        for _ in range(int(rng.integers(1, 26))):  # each person shows one of their tracks, or none
            seen.frame([p[int(rng.integers(len(p)))] for p in people if rng.random() < 0.7])
        every = {h for p in people for h in p}
        full = largest_group(every, seen.together)
        assert full <= len(people)
        for p in people:
            assert full - largest_group(every - set(p), seen.together) in (0, 1)


def test_a_large_crowd_is_counted_exactly() -> None:
    """1200 tracks in one frame (an explicit stack: no recursion limit at any group size)."""
    crowd = handles(1200)
    seen = CoObserved()
    seen.frame(crowd)
    assert largest_group(set(crowd), seen.together) == len(crowd)


def test_one_person_changes_a_crowd_of_over_64_tracks_by_at_most_one() -> None:
    """Above 64 tracks the count was a greedy group, which took the track seen with the most
    others first: one person's track, seen with one member of a group of 40 and with 60 passers-by
    never seen together, made the count 2 instead of 40 (sensitivity 38, where the DP noise
    assumes 1)."""
    group, passers = handles(40), handles(60)
    (person,) = handles(1)
    seen = CoObserved()
    seen.frame(group)
    for other in [group[0], *passers]:
        seen.frame([person, other])
    everyone = {person, *group, *passers}
    assert largest_group(everyone - {person}, seen.together) == 40
    assert largest_group(everyone, seen.together) == 40


def test_the_graph_with_the_most_maximal_groups_is_counted() -> None:
    """60 tracks in 20 triples, each track seen with every track outside its triple: 3^20
    maximal groups, which Bron-Kerbosch listed one by one (19 s at 45 tracks, hours at 60, in
    the frame loop). A colouring bound proves the first group of 20 is the largest."""
    tracks = handles(60)
    seen = CoObserved()
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            if tracks.index(b) // 3 != i // 3:
                seen.frame([a, b])
    assert largest_group(set(tracks), seen.together) == 20


def test_keep_forgets_the_tracks_no_window_asks_about() -> None:
    a, b, c = handles(3)
    seen = CoObserved()
    seen.frame([a, b, c])
    seen.keep({a, b})
    assert set(seen.together) == {a, b}
    assert seen.together[a] == {b}
