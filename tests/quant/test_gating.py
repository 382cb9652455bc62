"""Change gating on the demo clip: a static empty lobby costs almost no detector call, a face
is detected as usual, and every frame's result is the same as without the gate."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.vision.gating import ChangeGate, EmotionSchedule, FrameBudget
from agent.vision.observation import FaceObservation
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig, VisionConfig

ROOT = Path(__file__).resolve().parents[2]


def _load_make_sample() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "tools" / "make_sample.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


make_sample = _load_make_sample()

FPS = make_sample.FPS


@pytest.fixture(scope="module")
def clip(media: Path) -> list[np.ndarray]:
    """The 20 s demo clip rendered in memory: 0-4 s empty, 4-16 s people, 16-20 s empty."""
    tl = make_sample.timeline(20.0)
    scene = make_sample.Scene.load(media)
    return [make_sample.render(i, tl, scene) for i in range(len(tl.people_per_frame))]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[VisionPipeline]:
    p = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    yield p
    p.close()


def run(pipeline: VisionPipeline, clip: list[np.ndarray], gate: ChangeGate | None) -> tuple[
    list[list[FaceObservation]], list[bool]
]:
    results, called = [], []
    for i, frame in enumerate(clip):
        pixels, now = frame.copy(), i / FPS
        run_it = gate is None or gate.should_detect(pixels, now)
        faces = pipeline.analyze(pixels) if run_it else []
        if gate is not None and run_it:
            gate.record(len(faces), now)
        pixels.fill(0)
        results.append(faces)
        called.append(run_it)
    return results, called


def test_gate_skips_the_static_empty_lobby_and_detects_every_frame_with_people(
    pipeline: VisionPipeline, clip: list[np.ndarray]
) -> None:
    gate = ChangeGate(GatingConfig())
    _, called = run(pipeline, clip, gate)
    assert sum(called[0:20]) == 1  # 0-4 s, empty and static: only the first frame
    assert all(called[25:80])  # 5-16 s, one then six people: every frame
    assert sum(called[82:100]) <= 1  # 16.4-20 s, empty again: at most one refresh
    assert gate.skipped == len(clip) - sum(called)


def test_gated_and_ungated_runs_give_the_same_faces_on_every_frame(
    pipeline: VisionPipeline, clip: list[np.ndarray]
) -> None:
    ungated, _ = run(pipeline, clip, None)
    gated, called = run(pipeline, clip, ChangeGate(GatingConfig()))
    assert sum(called) < len(clip) * 0.8
    assert sum(len(f) for f in ungated[50:80]) >= 150  # the six-person stretch was really seen
    assert gated == ungated


def test_sensor_noise_alone_moves_no_cell_by_the_default_delta(clip: list[np.ndarray]) -> None:
    gate = ChangeGate(GatingConfig())
    gate.should_detect(clip[0], 0.0)
    gate.record(0, 0.0)
    for i in range(1, 20):
        gate.should_detect(clip[i], 0.1)
        assert gate.changed_cells() == 0


def test_a_static_scene_is_still_checked_every_refresh_interval(clip: list[np.ndarray]) -> None:
    gate = ChangeGate(GatingConfig(refresh_seconds=1.0))
    clock = FakeClock()
    decisions = []
    for i in range(20):
        run_it = gate.should_detect(clip[i], clock.monotonic())
        if run_it:
            gate.record(0, clock.monotonic())
        decisions.append(run_it)
        clock.advance(0.25)
    assert [i for i, d in enumerate(decisions) if d] == [0, 4, 8, 12, 16]


def test_disabled_gate_always_detects(clip: list[np.ndarray]) -> None:
    gate = ChangeGate(GatingConfig(enabled=False))
    assert all(gate.should_detect(clip[0], t) for t in range(5))


def test_close_zeroes_the_thumbnail_it_kept(clip: list[np.ndarray]) -> None:
    gate = ChangeGate(GatingConfig())
    gate.should_detect(clip[40], 0.0)
    gate.record(1, 0.0)
    assert not gate.is_zero()
    assert gate._reference.nbytes == 32 * 18  # the whole memory of the scene: 576 bytes
    gate.close()
    assert gate.is_zero()


PROBS = (("happy", 0.9), ("neutral", 0.1))


def test_emotion_is_reused_for_a_still_face_and_reread_every_n_frames() -> None:
    s = EmotionSchedule(every_frames=3, min_iou=0.6)
    box = (0.4, 0.3, 0.1, 0.15)
    assert s.reuse(0, box) is None
    s.remember(0, box, PROBS)
    assert s.reuse(1, (0.401, 0.3, 0.1, 0.15)) == PROBS
    assert s.reuse(2, box) == PROBS
    assert s.reuse(3, box) is None  # three frames old: read again
    assert (s.read, s.reused) == (1, 2)


def test_a_frame_index_that_goes_back_voids_old_readings() -> None:
    """A reopened source numbers its frames from 0 again: a reading of frame 10000 is not
    reused for frame 5 of the next session."""
    s = EmotionSchedule(every_frames=5, min_iou=0.6)
    box = (0.4, 0.3, 0.1, 0.15)
    s.remember(10_000, box, PROBS)
    assert s.reuse(5, box) is None
    assert s.reuse(0, box) is None


def test_a_face_that_moves_or_grows_is_reread_at_once() -> None:
    s = EmotionSchedule(every_frames=10, min_iou=0.6)
    s.remember(0, (0.4, 0.3, 0.1, 0.15), PROBS)
    assert s.reuse(1, (0.46, 0.3, 0.1, 0.15)) is None  # moved by 60 % of its width
    assert s.reuse(1, (0.37, 0.27, 0.16, 0.21)) is None  # came closer
    assert s.reuse(1, (0.8, 0.3, 0.1, 0.15)) is None  # another face


def test_frame_budget_drops_frames_to_hold_the_cpu_share_and_counts_them() -> None:
    budget = FrameBudget(cpu_budget=0.5, smoothing=1.0)
    clock = FakeClock()
    for _ in range(50):  # 10 s at 5 fps; each analysed frame costs 0.3 s of CPU
        if budget.admit(clock.monotonic()):
            budget.spent(0.3)
        clock.advance(0.2)
    assert budget.min_interval == pytest.approx(0.6)
    assert budget.admitted + budget.dropped == 50
    assert 0.3 * budget.admitted / 10.0 <= 0.5 + 0.3 / 10  # CPU seconds per second within budget
    assert budget.dropped >= 30


def test_frame_budget_admits_every_frame_when_there_is_room() -> None:
    budget = FrameBudget(cpu_budget=1.0)
    for i in range(25):
        assert budget.admit(i * 0.2)
        budget.spent(0.01)
    assert budget.dropped == 0


def test_pipeline_with_a_schedule_classifies_a_face_once_every_n_frames(
    pipeline: VisionPipeline, clip: list[np.ndarray]
) -> None:
    """The group stands still while the view pans slowly (10-16 s): each face is read on every
    5th frame; the astronaut crossing (5-10 s, a quarter of her face width per frame) is read
    about every other frame, since her box moves."""
    for frames, most_reads in ((range(50, 80), 6 * 30 // 5 + 6), (range(25, 50), 13)):
        schedule = EmotionSchedule(every_frames=5, min_iou=0.6)
        plain, scheduled = [], []
        for i in frames:
            plain.append(pipeline.analyze(clip[i].copy()))
            scheduled.append(pipeline.analyze(clip[i].copy(), schedule, frame=i))
        classified = sum(1 for f in plain for o in f if o.probs is not None)
        assert schedule.read + schedule.reused == classified
        assert schedule.read <= most_reads < classified
        for a, b in zip(plain, scheduled, strict=True):
            assert [o.box for o in a] == [o.box for o in b]  # detection and quality untouched
            assert [o.quality for o in a] == [o.quality for o in b]
            top_a = [max(o.probs or (("", 0.0),), key=lambda lp: lp[1])[0] for o in a]
            top_b = [max(o.probs or (("", 0.0),), key=lambda lp: lp[1])[0] for o in b]
            assert top_a == top_b
    assert pipeline.scratch_is_zero()
