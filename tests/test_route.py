"""One route for a frame: admit, lease, zones blanked, vision, face filters, zeroed; and
``run``, ``analyze`` and both ``bench`` modes take that same route."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.camera.base import SourceOptions
from agent.cli import main
from agent.clock import FakeClock, SystemClock
from agent.commands.analyze import Analysis
from agent.commands.bench import WARMUP
from agent.config import load_config
from agent.frame import Frame, Pixels
from agent.privacy.lease import LifetimeRecorder
from agent.privacy.settings import ZoneConfig
from agent.privacy.zones import ZoneMask
from agent.route import Carried, FaceFilter, FrameRoute
from agent.service import Service
from agent.vision.observation import FaceObservation, Quality
from agent.vision.settings import GatingConfig, VisionConfig
from agent.vision.stage import VisionStage
from tests.test_service import ScriptedSource, write_config


def face(box: tuple[float, float, float, float]) -> FaceObservation:
    quality = Quality(face_px=60.0, sharpness=50.0, brightness=120.0, yaw_degrees=0.0)
    return FaceObservation(box=box, score=0.9, keypoints=(), quality=quality, probs=(("happy", 1.0),))


class SeeingPipeline:
    """A fake model: keeps a copy of what it was shown, answers with the faces it is given."""

    labels = ("happy",)
    detector_side = 192
    grey_frames = False

    def __init__(self, faces: list[FaceObservation] | None = None, fail: bool = False) -> None:
        self.faces = faces or []
        self.fail = fail
        self.seen: list[Pixels] = []
        self.seen_lores: list[Pixels | None] = []

    def analyze(
        self, pixels: Pixels, schedule: Any = None, frame: int = 0, *, lores: Pixels | None = None
    ) -> list[FaceObservation]:
        self.seen.append(pixels.copy())
        self.seen_lores.append(None if lores is None else lores.copy())
        if self.fail:
            raise RuntimeError("the model broke")
        return list(self.faces)

    def close(self) -> None:
        pass


def frame(index: int = 0, *, source_time: float | None = None, mono: float = 100.0) -> Frame:
    return Frame(np.full((40, 60, 3), 200, np.uint8), index, mono, 0.0, source_time=source_time)


def test_a_frame_is_analysed_with_its_pixels_and_zeroed_when_the_route_returns() -> None:
    pipeline = SeeingPipeline([face((0.1, 0.1, 0.3, 0.5))])
    recorder = LifetimeRecorder(FakeClock())
    f = frame(3, source_time=1.5)
    carried = FrameRoute(VisionStage.plain(pipeline), recorder=recorder).carry(f)
    assert pipeline.seen[0].min() == 200
    assert not f.pixels.any()
    assert recorder.drain().count == 1
    assert carried == Carried(3, 1.5, 1.5, True, [face((0.1, 0.1, 0.3, 0.5))])


def test_zones_are_blank_before_the_model_looks_and_faces_in_them_are_dropped() -> None:
    left_half = ZoneMask([ZoneConfig(name="desk", polygon=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)])])
    in_zone, outside = face((0.1, 0.2, 0.2, 0.3)), face((0.6, 0.2, 0.2, 0.3))
    pipeline = SeeingPipeline([in_zone, outside])
    carried = FrameRoute(VisionStage.plain(pipeline), left_half).carry(frame())
    seen = pipeline.seen[0]
    assert not seen[:, :25].any()
    assert seen[:, 35:].min() == 200
    assert carried.faces == [outside]


def test_a_cameras_lores_copy_reaches_the_model_zoned_wherever_it_touches_a_zone_and_is_zeroed() -> None:
    """picamera2's lores stream is the frame scaled by the camera: it goes to the detector, so
    zones blank it too, and a lores pixel even partly over a zone is blank (the camera's scaler
    blended the zone into it)."""
    zone = ZoneMask([ZoneConfig(name="desk", polygon=[(0, 0), (0.45, 0), (0.45, 1), (0, 1)])])
    f = frame()
    f.lores = np.full((8, 12, 3), 90, np.uint8)  # 60 x 40 frame scaled by 5
    pipeline = SeeingPipeline()
    FrameRoute(VisionStage.plain(pipeline), zone, LifetimeRecorder(FakeClock())).carry(f)
    lores = pipeline.seen_lores[0]
    assert lores is not None
    # the zone ends at x = 27 of 60 (columns 0-26): lores columns 0-5 hold some of it, column 6
    # borders them (a scaler's taps reach beyond a pixel's footprint), 7.. are clear of it
    assert not lores[:, :7].any()
    assert lores[:, 7:].min() == 90
    assert not f.lores.any()
    assert not f.pixels.any()
    plain = SeeingPipeline()
    FrameRoute(VisionStage.plain(plain)).carry(frame())
    assert plain.seen_lores == [None]


def test_faces_below_the_policy_height_are_dropped_and_the_largest_kept() -> None:
    small, big, medium = face((0.0, 0.0, 0.05, 0.05)), face((0.1, 0.1, 0.5, 0.5)), face((0.6, 0.1, 0.2, 0.2))
    pipeline = SeeingPipeline([small, big, medium])
    route = FrameRoute(VisionStage.plain(pipeline), faces=FaceFilter(min_face_height=0.1, max_faces=1))
    assert route.carry(frame()).faces == [big]


def test_a_frame_over_the_cpu_budget_is_zeroed_unseen_and_counted() -> None:
    cpu = iter([0.0, 10.0, 10.0, 10.0])  # the first frame costs 10 CPU seconds
    stage = VisionStage(SeeingPipeline(), GatingConfig(enabled=False), cpu_time=lambda: next(cpu))
    pipeline = stage.pipeline
    assert isinstance(pipeline, SeeingPipeline)
    recorder = LifetimeRecorder(FakeClock())
    route = FrameRoute(stage, recorder=recorder)
    route.carry(frame(0, source_time=0.0))
    late = frame(1, source_time=0.2)
    carried = route.carry(late)
    assert not carried.admitted
    assert carried.faces == []
    assert len(pipeline.seen) == 1
    assert not late.pixels.any()
    assert recorder.drain().count == 2
    assert stage.counters.budget_dropped == 1


def test_a_failing_model_still_leaves_the_frame_zeroed() -> None:
    f = frame()
    with pytest.raises(RuntimeError, match="the model broke"):
        FrameRoute(VisionStage.plain(SeeingPipeline(fail=True))).carry(f)
    assert not f.pixels.any()


def test_elapsed_is_a_files_own_position_or_a_cameras_time_since_its_first_frame() -> None:
    route = FrameRoute(VisionStage.plain(SeeingPipeline()))
    assert [route.carry(frame(i, source_time=t)).elapsed for i, t in enumerate([0.0, 0.2, 0.4])] == [
        0.0, 0.2, 0.4,
    ]
    live = FrameRoute(VisionStage.plain(SeeingPipeline()))
    assert [live.carry(frame(i, mono=m)).elapsed for i, m in enumerate([50.0, 50.5, 51.25])] == [
        0.0, 0.5, 1.25,
    ]


# --- every command takes this route ---------------------------------------------------------------


@pytest.fixture
def carried_by_route(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Indexes of every frame that went through ``FrameRoute.carry``, whoever called it."""
    seen: list[int] = []
    real = FrameRoute.carry

    def spy(self: FrameRoute, f: Frame) -> Carried:
        seen.append(f.index)
        return real(self, f)

    monkeypatch.setattr(FrameRoute, "carry", spy)
    return seen


def test_run_carries_every_frame_along_the_route(tmp_path: Path, carried_by_route: list[int]) -> None:
    cfg = load_config(write_config(tmp_path, "scripted.mp4", extra="vision: {gating: {enabled: false}}\n"))
    service = Service(
        cfg,
        clock=FakeClock(start=1_800_000_000.0),
        opener=lambda s, o, c: ScriptedSource(c, 12, False),
        pipeline_factory=lambda _c: SeeingPipeline(),  # type: ignore[arg-type,return-value]
    )
    assert service.run() == 0
    assert carried_by_route == list(range(1, 13))


def test_analyze_carries_every_frame_along_the_route(
    tmp_path: Path, media: Path, carried_by_route: list[int]
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes((media / "astronaut.png").read_bytes())
    out = io.StringIO()
    run = Analysis(VisionConfig(), out, True, SystemClock(), pipeline_factory=lambda _: SeeingPipeline())
    summary = run.execute(str(folder), SourceOptions(realtime=False), gate_fps=None)["summary"]
    assert summary["frames"] == 3
    assert len(carried_by_route) == 3


def test_bench_measures_the_route(capsys: pytest.CaptureFixture[str], carried_by_route: list[int]) -> None:
    assert main(["bench", "--frames", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 3
    assert len(carried_by_route) == WARMUP + 3  # the warm-up frames, then the timed ones


def test_bench_gating_measures_the_route(
    capsys: pytest.CaptureFixture[str], sample_clip: Path, carried_by_route: list[int]
) -> None:
    assert main(["bench", str(sample_clip), "--gating", "off", "--frames", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 4
    assert len(carried_by_route) == 1 + 4  # a copy of the first frame warms up, then 4 timed
