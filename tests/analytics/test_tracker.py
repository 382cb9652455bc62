"""Tracker: association across frames, smoothing over a track's life, forgetting, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from agent.analytics.settings import TrackerConfig
from agent.analytics.tracker import REPORTED_STILL_S, Tracker, TrackHandle, iou_matrix
from agent.clock import FakeClock

from .faces import face, seeded


def make(clock: FakeClock, **kw: object) -> Tracker:
    return Tracker(TrackerConfig.model_validate(kw), clock, rng=seeded(1))


def test_a_face_moving_slowly_keeps_one_track(clock: FakeClock) -> None:
    tracker = make(clock)
    handles = set()
    for i in range(20):
        (view,) = tracker.update([face(x=0.1 + 0.01 * i)], i * 0.2)
        handles.add(view.handle)
    assert len(handles) == 1
    assert view.frames == 20
    assert len(tracker) == 1


def test_two_faces_keep_their_own_tracks_whatever_the_order(clock: FakeClock) -> None:
    tracker = make(clock)
    a, b = tracker.update([face(x=0.1, label="happy"), face(x=0.6, label="sad")], 0.0)
    b2, a2 = tracker.update([face(x=0.61, label="sad"), face(x=0.11, label="happy")], 0.2)
    assert a2.handle is a.handle
    assert b2.handle is b.handle
    assert (a2.emotion, b2.emotion) == ("happy", "sad")


def test_a_face_outside_the_gate_around_its_prediction_starts_a_new_track(clock: FakeClock) -> None:
    """Was: any jump of 0.85 widths started a new track (a walker at 5 fps became six people).
    Now the gate is around the constant-velocity prediction: a jump along the motion is the same
    face, the same jump against it is not."""
    tracker = make(clock, max_centre_distance=0.5, max_speed=0.0)
    (first,) = tracker.update([face(x=0.1, w=0.1)], 0.0)
    (near,) = tracker.update([face(x=0.14, w=0.1)], 0.2)  # 0.4 widths: within the 0.5 gate
    (along,) = tracker.update([face(x=0.225, w=0.1)], 0.4)  # predicted 0.18: 0.45 widths off
    (back,) = tracker.update([face(x=0.12, w=0.1)], 0.6)  # predicted ~0.3: 1.8 widths off
    assert near.handle is first.handle
    assert along.handle is first.handle
    assert back.handle is not first.handle


def test_centre_rule_joins_a_fast_face_within_the_limit(clock: FakeClock) -> None:
    tracker = make(clock, iou_threshold=0.9, max_centre_distance=0.5)
    (first,) = tracker.update([face(x=0.1, w=0.1)], 0.0)
    (second,) = tracker.update([face(x=0.14, w=0.1)], 0.2)  # IoU below 0.9, centre 0.4 widths
    assert second.handle is first.handle


def test_smoothing_is_the_geometric_mean_over_the_life(clock: FakeClock) -> None:
    """Three calm frames outvote one strong grimace; the smoothed probs sum to one."""
    tracker = make(clock)
    for i, (label, p) in enumerate([("neutral", 0.6), ("neutral", 0.6), ("neutral", 0.6), ("angry", 0.95)]):
        (view,) = tracker.update([face(label=label, p=p)], i * 0.2)
    assert view.emotion == "neutral"
    assert view.probs is not None
    assert sum(p for _, p in view.probs) == pytest.approx(1.0)
    probs = dict(view.probs)
    rest_n, rest_a = 0.4 / 6, 0.05 / 6
    expected_ratio = ((0.6**3 * rest_a) / (rest_n**3 * 0.95)) ** 0.25
    assert probs["neutral"] / probs["angry"] == pytest.approx(expected_ratio)


def test_a_never_classified_track_reports_its_most_frequent_reason(clock: FakeClock) -> None:
    tracker = make(clock)
    reasons = ["blurred", "turned", "blurred"]
    for i, reason in enumerate(reasons):
        (view,) = tracker.update([face(label=None, reason=reason)], i * 0.2)
    assert view.emotion is None
    assert view.probs is None
    assert view.abstain_reason == "blurred"


def test_an_abstained_frame_does_not_erase_an_earlier_emotion(clock: FakeClock) -> None:
    tracker = make(clock)
    tracker.update([face(label="sad")], 0.0)
    (view,) = tracker.update([face(label=None, reason="turned")], 0.2)
    assert view.emotion == "sad"
    assert view.abstain_reason is None


def test_min_frames_confirms_a_track(clock: FakeClock) -> None:
    tracker = make(clock, min_frames=3)
    confirmed = [tracker.update([face()], i * 0.2)[0].confirmed for i in range(4)]
    assert confirmed == [False, False, True, True]


def test_a_track_is_forgotten_after_forget_seconds(clock: FakeClock) -> None:
    tracker = make(clock, forget_seconds=3.0)
    (a,) = tracker.update([face()], 0.0)
    (b,) = tracker.update([face()], 2.9)
    assert b.handle is a.handle
    tracker.update([], 6.0)
    assert len(tracker) == 0
    (c,) = tracker.update([face()], 6.1)
    assert c.handle is not a.handle


def test_memory_stays_bounded_with_thousands_of_faces_coming_and_going(clock: FakeClock) -> None:
    """Thousands of faces over 4 minutes at 5 fps: live tracks never exceed the cap, memory is flat."""
    tracker = make(clock, max_tracks=32, forget_seconds=3.0, max_speed=0.0)  # random faces: no motion
    rng = np.random.default_rng(7)
    peak_tracks = 0
    tracemalloc.start()
    try:
        for frame in range(1200):
            t = frame * 0.2
            n = int(rng.integers(0, 12))
            faces = [
                face(x=float(rng.uniform(0, 0.9)), y=float(rng.uniform(0, 0.9)), w=0.05, h=0.05)
                for _ in range(n)
            ]
            tracker.update(faces, t)
            peak_tracks = max(peak_tracks, len(tracker))
            if frame == 300:
                early, _ = tracemalloc.get_traced_memory()
        late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_tracks == 32
    assert tracker.evicted > 2000  # thousands of faces came and went
    assert late - early < 200_000


def test_views_and_handles_print_no_id(clock: FakeClock) -> None:
    tracker = make(clock)
    (view,) = tracker.update([face()], 0.0)
    assert repr(view.handle) == "TrackHandle(<hidden>)"
    assert "handle" not in repr(view)
    assert "box" not in repr(view)
    assert isinstance(view.handle, TrackHandle)
    assert not hasattr(view.handle, "__dict__")


def test_iou_of_identical_disjoint_and_half_boxes() -> None:
    a = np.array([[0.0, 0.0, 0.2, 0.2]])
    b = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.1, 0.0, 0.2, 0.2]])
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 0.0, 1 / 3])


def test_frames_further_apart_than_forget_seconds_never_make_a_person(clock: FakeClock) -> None:
    """camera.fps 0.1 (a frame every 10 s) with forget_seconds 5: each track is forgotten
    before its next frame, so the same walking face is a new one-frame track every time and
    never counts; the config that sets this up is refused (test_config)."""
    tracker = make(clock, forget_seconds=5.0, min_frames=1)
    views = [tracker.update([face(x=0.1 + 0.02 * i)], i * 10.0)[0] for i in range(30)]
    assert len({v.handle for v in views}) == 30
    assert not any(v.counts for v in views)
    tracker = make(clock, forget_seconds=10.0, min_frames=1)
    views = [tracker.update([face(x=0.1 + 0.02 * i)], i * 10.0)[0] for i in range(30)]
    assert views[-1].counts


@pytest.mark.parametrize(("still_for", "named"), [(20.0, False), (REPORTED_STILL_S + 30.0, True)])
def test_health_names_the_cell_of_a_face_still_for_minutes_not_seconds(
    clock: FakeClock, still_for: float, named: bool
) -> None:
    """A person who sat still for 20 s was named in the hour's health (cell C3) though every
    window of that hour was suppressed (found by a privacy review); a poster is still for hours."""
    tracker = make(clock)
    t = 0.0
    for i in range(10):  # moves once: it counted, then holds still
        t = i * 0.2
        tracker.update([face(x=0.5 + 0.02 * i, y=0.55, w=0.05)], t)
    end = t + still_for
    while t < end:
        t += 1.0
        tracker.update([face(x=0.68, y=0.55, w=0.05)], t)
    assert tracker.static_cells() == (["C3"] if named else [])
    assert tracker.static_cells(seen_at=t) == tracker.static_cells()
    tracker.update([], t + 1.0)  # gone: its track lives on for forget_seconds
    assert tracker.static_cells() == (["C3"] if named else [])
    assert tracker.static_cells(seen_at=t + 1.0) == []
