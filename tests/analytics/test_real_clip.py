"""A replayed real clip: real frames, real models, and one person per window however many frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.analytics.settings import AnalyticsConfig, TrackerConfig
from agent.analytics.tracker import Tracker
from agent.analytics.windows import FrameCounters, WindowAggregator
from agent.camera.base import SourceOptions
from agent.camera.replay import ReplaySource
from agent.clock import FakeClock
from agent.privacy.lease import LifetimeRecorder, lease
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import VisionConfig

from .faces import seeded


def pan_clip(media: Path, folder: Path, frames: int, step: int = 3) -> Path:
    """A slow camera pan across the six-person group photo: ``step`` pixels to the right per frame.

    Three, not one: at one pixel per frame (0.007 face widths a second) the faces are as still as
    a poster's, and a face that never moves is not counted as a person (docs/analytics.md)."""
    img = cv2.imread(str(media / "group6.jpg"), cv2.IMREAD_COLOR)
    assert img is not None
    folder.mkdir()
    width = img.shape[1] - frames * step
    for i in range(frames):
        crop = np.ascontiguousarray(img[:, i * step : i * step + width])
        assert cv2.imwrite(str(folder / f"{i:03d}.bmp"), crop)  # lossless and quick to write
    return folder


@pytest.mark.slow
def test_a_replayed_pan_counts_each_person_once_per_window(media: Path, tmp_path: Path) -> None:
    """60 frames at 2 fps = three 10 s windows of 20 frames. The short-range detector finds
    five of the six faces, and the sixth, smallest one on and off (today: 5, 6, 6 per window).
    Each window counts exactly the people visible in it, where counting per frame would give
    about 100."""
    clock = FakeClock(start=1_700_000_000.0)  # a multiple of 10 s: windows start with the clip
    source = ReplaySource(str(pan_clip(media, tmp_path / "clip", 60)), SourceOptions(fps=2.0), clock)
    pipeline = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    tracker = Tracker(TrackerConfig(), clock, rng=seeded(0))
    # counting is the subject here: the differencing rule would withhold the window the sixth
    # face joins (tests/analytics/test_differencing.py)
    agg = WindowAggregator(AnalyticsConfig(window_seconds=10, min_people=2, differencing="off"), clock)
    recorder = LifetimeRecorder(clock)
    faces_per_frame = []
    source.open()
    try:
        while (frame := source.read()) is not None:
            with lease(frame, recorder) as pixels:
                observations = pipeline.analyze(pixels)
            faces_per_frame.append(len(observations))
            views = tracker.update(observations, frame.timestamp)
            agg.add_frame(frame.timestamp, views, FrameCounters(lifetimes_ms=recorder.drain().samples_ms))
    finally:
        source.close()
        pipeline.close()
    reports = agg.flush(clock.time() + 0.5)
    assert [r.frames_analysed for r in reports] == [20, 20, 20]
    assert [r.lifetime_count for r in reports] == [20, 20, 20]
    most_in_a_frame = [max(faces_per_frame[i : i + 20]) for i in (0, 20, 40)]
    assert all(5 <= n <= 6 for n in most_in_a_frame)  # the photo shows six people
    assert [r.people for r in reports] == most_in_a_frame
    assert sum(faces_per_frame) > 250  # counting faces per frame would give ~280 people
    for r in reports:
        assert r.votes is not None
        assert r.abstained is not None
        assert sum(r.votes.values()) + sum(r.abstained.values()) == r.people
        assert r.votes["happy"] >= 1
