"""VisionStage: the gate, schedule and budget as the service drives them, with a counting double
for the pipeline and a scripted CPU clock."""

from __future__ import annotations

import tracemalloc
from typing import Any, cast

import numpy as np
import pytest

from agent.errors import SourceError
from agent.vision.gating import ChangeGate, FrameBudget
from agent.vision.observation import FaceObservation
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig
from agent.vision.stage import ZERO_COUNTERS, StageCounters, VisionStage
from tests.analytics.faces import face

FACE = face(x=0.4, y=0.3, w=0.1, h=0.15)


class Pipeline:
    """Finds one face while ``present``; records the schedule it was handed."""

    detector_side = 192
    grey_frames = False

    def __init__(self) -> None:
        self.present = False
        self.calls = 0
        self.schedules: list[Any] = []

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[FaceObservation]:
        self.calls += 1
        self.schedules.append(schedule)
        return [FACE] if self.present else []


class CpuClock:
    """Each reading is ``per_frame`` later: the stage reads it before and after each frame."""

    def __init__(self, per_frame: float) -> None:
        self.t, self.per_frame = 0.0, per_frame

    def __call__(self) -> float:
        self.t += self.per_frame
        return self.t


def stage(settings: GatingConfig, pipeline: Pipeline, cpu: float = 0.001) -> VisionStage:
    return VisionStage(cast(VisionPipeline, pipeline), settings, cpu_time=CpuClock(cpu))


def frame(value: int) -> np.ndarray:
    return np.full((90, 160, 3), value, np.uint8)


def test_a_static_empty_scene_skips_the_detector_and_a_change_wakes_it() -> None:
    p = Pipeline()
    s = stage(GatingConfig(), p)
    for i in range(10):
        assert s.analyze(frame(100), i, i * 0.2) == []
    assert p.calls == 1
    p.present = True
    assert s.analyze(frame(160), 10, 2.0) == [FACE]
    assert s.analyze(frame(160), 11, 2.2) == [FACE]  # someone is there: detect every frame
    c = s.counters
    assert (c.frames, c.detector_runs, c.detector_skipped, c.emotion_reads) == (12, 3, 9, 2)


def test_gating_off_and_every_frame_reads_is_the_plain_pipeline() -> None:
    p = Pipeline()
    s = stage(GatingConfig(enabled=False, emotion_every_frames=1), p)
    for i in range(10):
        s.analyze(frame(100), i, i * 0.2)
    assert p.calls == 10
    assert p.schedules == [None] * 10
    assert s.counters.detector_skipped == 0


def test_the_schedule_is_passed_when_emotion_is_reread_every_n_frames() -> None:
    p = Pipeline()
    s = stage(GatingConfig(emotion_every_frames=5), p)
    s.analyze(frame(100), 0, 0.0)
    assert p.schedules[0] is s.schedule is not None


def test_the_budget_drops_frames_by_their_cpu_cost_and_counts_them() -> None:
    p = Pipeline()
    s = stage(GatingConfig(enabled=False, cpu_budget=0.1), p, cpu=0.05)  # 50 ms a frame
    admitted = 0
    for i in range(50):  # 10 s of video at 5 fps
        if s.admit(i * 0.2):
            s.analyze(frame(100), i, i * 0.2)
            admitted += 1
    # 0.1 cores at 50 ms a frame: one frame per 0.5 s of video, so every third at 5 fps
    assert 15 <= admitted <= 20
    assert s.counters.budget_dropped == 50 - admitted


def test_a_source_that_starts_again_is_not_starved_by_the_budget_or_the_gate() -> None:
    """A reopened file starts its time at 0 again: neither part may wait for the old time."""
    budget = FrameBudget(cpu_budget=0.5)
    assert budget.admit(100.0)
    budget.spent(0.1)
    assert budget.admit(0.2)
    gate = ChangeGate(GatingConfig(refresh_seconds=5.0))
    assert gate.should_detect(frame(100), 100.0)
    gate.record(0, 100.0)
    assert not gate.should_detect(frame(100), 101.0)
    assert gate.should_detect(frame(100), 0.0)


def test_a_replacing_stage_carries_the_totals_and_close_zeroes_the_gate() -> None:
    p = Pipeline()
    first = stage(GatingConfig(), p)
    for i in range(5):
        first.analyze(frame(100), i, i * 0.2)
    second = VisionStage(cast(VisionPipeline, p), GatingConfig(), carried=first.counters)
    first.close()
    assert first.gate.is_zero()
    second.analyze(frame(100), 0, 0.0)
    assert second.counters == StageCounters(6, 2, 4, 0, 0, 0)
    assert ZERO_COUNTERS.plus(second.counters) == second.counters


def test_only_the_reference_thumbnail_outlives_a_frame_and_a_pause_zeroes_it() -> None:
    p = Pipeline()
    s = stage(GatingConfig(emotion_every_frames=5), p)
    s.analyze(frame(100), 0, 0.0)
    assert s.gate._reference.any()
    assert not s.gate._current.any()
    assert not s.gate._small.any()
    s.pause()  # privacy mode or the schedule closed the camera
    assert s.gate.is_zero()
    assert s.schedule is not None
    assert s.schedule.reuse(1, FACE.box) is None
    s.analyze(frame(100), 1, 0.2)
    assert p.calls == 2, "after a pause the first frame is detected again"


def test_a_malformed_frame_is_a_clear_source_error_before_the_gate_runs() -> None:
    s = stage(GatingConfig(), Pipeline())
    with pytest.raises(SourceError, match="BGR uint8"):
        s.analyze(np.zeros((90, 160, 4), np.uint8), 0, 0.0)
    assert s.gate.is_zero()


def test_a_large_frame_leaves_no_unzeroed_copy_on_the_heap() -> None:
    """At 1080p the gate samples every k-th pixel: into its own buffer, zeroed after use, not
    into a temporary that OpenCV or numpy would free unzeroed."""
    gate = ChangeGate(GatingConfig())
    big = np.full((1080, 1920, 3), 90, np.uint8)
    gate.should_detect(big, 0.0)  # the first call sizes the sampling buffer
    gate.record(0, 0.0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        gate.should_detect(big, 0.1)
        gate.changed_cells()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - base < 4096, f"{peak - base} bytes allocated while gating a 1080p frame"
    assert not gate._strided.any()
    assert gate._strided.shape[0] * gate._strided.shape[1] > 10_000  # the sampling path ran
