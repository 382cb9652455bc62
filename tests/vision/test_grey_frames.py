"""Grey frames: where the source makes the detector's colour copy, the route gets the frame in
grey (the emotion model reads grey crops) and the colour frame is zeroed in the decoding thread.
At 1080p that cut the analysing thread's glue from 0.84 to 0.51 ms a frame with short range
(`emotion-agent bench --matrix samples/lobby-1080p.mp4`): a third of the bytes to zero, no colour
conversion per crop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions, open_source
from agent.camera.picam import Picamera2Source
from agent.camera.scaled_copy import ScaledCopy
from agent.clock import SystemClock
from agent.frame import Frame, Pixels
from agent.privacy.settings import ZoneConfig
from agent.privacy.zones import ZoneMask
from agent.route import FrameRoute
from agent.vision.gating import ChangeGate
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig
from agent.vision.shrink import shared
from agent.vision.stage import VisionStage
from tests.camera.fake_picamera2 import make_module


def letterboxed(astronaut: Pixels, size: tuple[int, int] = (640, 360)) -> Pixels:
    """The astronaut's face in a wide frame, as a camera would frame a person."""
    w, h = size
    face = cv2.resize(astronaut, (h, h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[:, (w - h) // 2 : (w - h) // 2 + h] = face
    return canvas


def test_a_source_asked_for_grey_hands_out_the_grey_frame_and_zeroes_the_colour_one() -> None:
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (360, 640, 3), np.uint8)
    original = colour.copy()
    copy = ScaledCopy(128)
    copy.detector_read(128, None, True)
    lores, zones, shown = copy.of(colour)
    assert shown.shape == (360, 640)
    assert np.array_equal(shown, cv2.cvtColor(original, cv2.COLOR_BGR2GRAY))
    assert not colour.any()  # the colour frame lived from the decode to here
    assert lores is not None
    assert zones is None
    expected = np.empty_like(lores)
    shared(128).shrink(original, expected)
    assert np.array_equal(lores, expected)  # the detector's copy is the colour one, as before


def test_the_frame_stays_colour_unless_grey_was_asked_for_and_a_copy_was_made() -> None:
    colour = np.full((360, 640, 3), 9, np.uint8)
    copy = ScaledCopy(128)
    assert copy.of(colour)[2] is colour  # no route has said yet
    copy.detector_read(128, None, False)
    assert copy.of(colour)[2] is colour
    copy.detector_read(None, None, True)  # the change gate skipped the detector: no copy
    assert copy.of(colour)[2] is colour
    copy.detector_read(192, None, True)
    small = np.full((90, 160, 3), 9, np.uint8)  # under the letterbox: the detector enlarges it
    assert copy.of(small)[2] is small
    assert colour.all()


def test_grey_buffers_are_reused_once_their_frame_is_gone_and_zeroed_on_close() -> None:
    copy = ScaledCopy(128)
    copy.detector_read(128, None, True)
    first = copy.of(np.full((360, 640, 3), 50, np.uint8))[2]
    held = copy.of(np.full((360, 640, 3), 60, np.uint8))[2]
    assert held is not first  # a frame still held is never decoded into
    address = first.__array_interface__["data"][0]
    del first
    again = copy.of(np.full((360, 640, 3), 70, np.uint8))[2]
    assert again.__array_interface__["data"][0] == address
    copy.close()
    assert not held.any()
    assert not again.any()


class Asked:
    """A source's ``detector_read``: records what the route asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, side: int | None, zones: object | None, grey: bool) -> None:
        self.calls.append((side, zones, grey))


@pytest.mark.parametrize(
    ("tiles", "stills", "grey"), [(1, False, True), (2, False, False), (1, True, False)]
)
def test_the_route_asks_for_grey_frames_only_where_the_pipeline_reads_no_colour_of_its_own(
    pipeline: VisionPipeline, tiles: int, stills: bool, grey: bool
) -> None:
    """Tiles and padded stills read the full frame's colour; whole-frame detection reads only
    the copy."""
    saved = (pipeline.tiles, pipeline.stills)
    pipeline.tiles, pipeline.stills = tiles, stills
    try:
        asked = Asked()
        frame = Frame(np.zeros((360, 640, 3), np.uint8), 0, 0.0, 0.0, detector_read=asked)
        FrameRoute(VisionStage.plain(pipeline)).carry(frame)
        assert asked.calls == [(pipeline.detector_side, None, grey)]
    finally:
        pipeline.tiles, pipeline.stills = saved


def test_a_grey_frame_with_its_colour_copy_reads_what_the_colour_frame_reads(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """The detector gets the same copy; the crop differs from the colour one's grey only in
    rounding (tests/vision/test_glue.py), so the reading is the same to within 0.02."""
    colour = letterboxed(astronaut)
    p = pipeline.detector.placement(640, 360)
    lores = np.empty((p.h, p.w, 3), np.uint8)
    shared(pipeline.detector_side).shrink(colour, lores)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    from_colour = pipeline.analyze(colour.copy(), lores=lores.copy())
    from_grey = pipeline.analyze(grey, lores=lores.copy())
    assert len(from_colour) == len(from_grey) == 1
    a, b = from_colour[0], from_grey[0]
    assert a.box == b.box
    assert a.score == b.score
    assert a.probs is not None
    assert b.probs is not None
    assert a.emotion == b.emotion
    assert max(abs(p - q) for (_, p), (_, q) in zip(a.probs, b.probs, strict=True)) < 0.02
    assert pipeline.scratch_is_zero()


@pytest.mark.parametrize("tiles", [1, 2])
def test_a_grey_frame_without_a_copy_it_can_use_is_still_searched(
    pipeline: VisionPipeline, astronaut: Pixels, tiles: int
) -> None:
    """A frame decoded grey before a reload asked for tiles or another detector: its grey is
    spread over three channels for that frame, the face is still found."""
    grey = cv2.cvtColor(letterboxed(astronaut), cv2.COLOR_BGR2GRAY)
    saved = pipeline.tiles
    pipeline.tiles = tiles
    try:
        faces = pipeline.analyze(grey, lores=np.zeros((10, 10, 3), np.uint8))
    finally:
        pipeline.tiles = saved
    assert len(faces) == 1
    assert faces[0].score > 0.7
    assert pipeline.scratch_is_zero()


def test_a_grey_frame_whose_copy_predates_the_zones_is_zoned_and_its_copy_is_not_read(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """A copy made before the route's zones were known is not read: blanking it by footprint
    let up to 2 grey levels from inside a zone through at 1600 x 1200 (a review). The zoned grey
    frame, spread over three channels, is what the detector reads for that frame."""
    colour = letterboxed(astronaut)
    copy = ScaledCopy(pipeline.detector_side)
    copy.detector_read(pipeline.detector_side, None, True)  # the source knows no zones yet
    lores, _, grey = copy.of(colour)
    seen: list[tuple[Pixels, Pixels | None]] = []
    real = pipeline.analyze

    def seeing(pixels: Pixels, *args: Any, lores: Pixels | None = None) -> Any:
        seen.append((pixels.copy(), None if lores is None else lores.copy()))
        return real(pixels, *args, lores=lores)

    left = ZoneMask([ZoneConfig(name="left", polygon=[(0, 0), (0.5, 0), (0.5, 1), (0, 1)])])
    frame = Frame(grey, 0, 0.0, 0.0, lores=lores, cpu_scaled=True, lores_zones=None)
    pipeline.analyze = seeing  # type: ignore[method-assign]
    try:
        FrameRoute(VisionStage.plain(pipeline), zones=left).carry(frame)
    finally:
        del pipeline.analyze
    pixels, read_lores = seen[0]
    assert read_lores is None
    assert not pixels[:, :320].any()
    assert pixels[:, 320:].any()
    assert not frame.pixels.any()
    assert lores is not None
    assert not lores.any()
    assert pipeline.scratch_is_zero()


def test_the_change_gate_zeroes_what_it_sampled_from_a_grey_frame() -> None:
    """At 1080p the gate copies every k-th pixel before it averages them: that copy is zeroed
    for a grey frame as for a colour one (a review found it left holding 42,625 pixels)."""
    gate = ChangeGate(GatingConfig())
    grey = np.random.default_rng(3).integers(1, 256, (1080, 1920), np.uint8)
    assert gate.should_detect(grey, 0.0)
    gate.end_frame()
    assert gate._strided.size
    assert gate.is_zero()


def test_the_change_gate_sees_a_grey_frame_as_it_sees_the_colour_one(astronaut: Pixels) -> None:
    colour = letterboxed(astronaut, (1920, 1080))
    a, b = ChangeGate(GatingConfig()), ChangeGate(GatingConfig())
    a._thumbnail(colour)
    b._thumbnail(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    assert np.abs(a._current.astype(int) - b._current.astype(int)).max() <= 1


def test_a_file_source_hands_the_analysing_thread_grey_frames_after_the_first(
    pipeline: VisionPipeline, sample_clip: Path
) -> None:
    """The first frame comes before any route said what it takes; every later one is grey,
    and the decoder's colour buffer holds nothing once it was made."""
    options = SourceOptions(realtime=False, fps=1000.0, detector_side=pipeline.detector_side)
    src = open_source(str(sample_clip), options, SystemClock())
    route = FrameRoute(VisionStage.plain(pipeline))
    shapes = []
    try:
        for _ in range(4):
            frame = src.read()
            assert frame is not None
            shapes.append(frame.pixels.shape)
            route.carry(frame)
            assert not frame.pixels.any()
        pool = src._pool._buffers  # type: ignore[attr-defined]
        assert pool
        assert not any(buf.any() for buf in pool)
    finally:
        src.close()
    assert shapes == [(360, 640, 3)] + [(360, 640)] * 3


def test_a_pi_camera_hands_the_route_grey_frames_and_its_isp_copy_after_the_first(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """picamera2: the route tells the camera it takes grey frames; from the next frame on the
    main stream comes grey (never copied in colour) beside the ISP's lores RGB, and the face is
    read as from the colour frame."""
    scene = letterboxed(astronaut)
    options = SourceOptions(fps=5, width=640, height=360, detector_side=pipeline.detector_side)
    src = Picamera2Source("0", options, SystemClock(), module=make_module([scene]))
    src.open()
    route = FrameRoute(VisionStage.plain(pipeline))
    shapes, readings = [], []
    try:
        for _ in range(3):
            frame = src.read()
            assert frame is not None
            assert frame.lores is not None
            shapes.append(frame.pixels.shape)
            faces = route.carry(frame).faces
            assert not frame.pixels.any()
            assert not frame.lores.any()
            assert len(faces) == 1
            readings.append(faces[0])
    finally:
        src.close()
    assert shapes == [(360, 640, 3)] + [(360, 640)] * 2
    colour, grey = readings[0], readings[1]
    assert colour.box == grey.box  # the detector read the same ISP copy
    assert colour.probs is not None
    assert grey.probs is not None
    assert colour.emotion == grey.emotion
    assert max(abs(p - q) for (_, p), (_, q) in zip(colour.probs, grey.probs, strict=True)) < 0.02
    assert pipeline.scratch_is_zero()
