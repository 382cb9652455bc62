"""A file source scales each frame for the detector as it decodes it (``Frame.lores``): the
detector then reads the very bytes its own resize would have written, every scratch image on
the way is zeroed, and privacy zones still keep what is inside them from the detector."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.camera.base import SourceOptions, open_source
from agent.camera.replay import ReplaySource
from agent.camera.scaled_copy import ScaledCopy
from agent.clock import FakeClock
from agent.frame import Frame, Pixels
from agent.privacy.lease import lease
from agent.privacy.settings import ZoneConfig
from agent.privacy.zones import ZoneMask
from agent.route import FrameRoute
from agent.vision.pipeline import VisionPipeline
from agent.vision.settings import GatingConfig, VisionConfig
from agent.vision.stage import VisionStage
from tests.test_route import SeeingPipeline
from tests.vision.conftest import read


def input_bytes(pipeline: VisionPipeline) -> bytes:
    view = pipeline.detector.model._it.tensor(pipeline.detector.model.input_index)
    data = view().tobytes()
    del view
    return data


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080), (270, 480), (300, 300), (401, 233)])
def test_the_copy_fills_the_detector_input_byte_for_byte_as_its_own_resize(
    pipeline: VisionPipeline, media: Path, size: tuple[int, int]
) -> None:
    frame = cv2.resize(read(media, "group6.jpg"), size, interpolation=cv2.INTER_AREA)
    det = pipeline.detector
    det._letterbox(frame)
    own = input_bytes(pipeline)
    det.clear()
    lores = ScaledCopy(det.size).of(frame)
    assert lores is not None
    det._fill_scaled(lores, det.placement(*size))
    try:
        assert input_bytes(pipeline) == own
        assert len(set(own)) > 100  # a real image was compared, not two blank inputs
    finally:
        det.clear()


def test_the_clip_read_with_copies_gives_the_very_observations_of_the_clip_read_without(
    pipeline: VisionPipeline, sample_clip: Path, clock: FakeClock
) -> None:
    def observations(side: int | None) -> list[object]:
        src = open_source(str(sample_clip), SourceOptions(realtime=False, detector_side=side), clock)
        out: list[object] = []
        try:
            while (frame := src.read()) is not None:
                assert (frame.lores is not None) == (side is not None)
                with lease(frame) as pixels:
                    out.append(pipeline.analyze(pixels, lores=frame.lores))
        finally:
            src.close()
        return out

    with_copies = observations(pipeline.detector.size)
    assert with_copies == observations(None)
    assert sum(len(faces) for faces in with_copies) > 100  # type: ignore[arg-type]
    assert pipeline.scratch_is_zero()


def test_the_source_counts_its_copies_and_their_time_and_keeps_no_pixels(
    sample_clip: Path, clock: FakeClock
) -> None:
    src = open_source(str(sample_clip), SourceOptions(realtime=False, detector_side=192), clock)
    assert isinstance(src, ReplaySource)
    assert src.scaled is not None
    taken = 0
    try:
        while (frame := src.read_wanted(lambda t: int(t * 10) % 3 == 0)) is not None:  # a third of them
            taken += 1
            assert frame.lores is not None
            assert frame.lores.shape == (108, 192, 3)
            with lease(frame):
                pass
            assert not frame.lores.any()
    finally:
        src.close()
    info = src.info
    assert info.scaled == taken > 10  # frames turned away before the decode were never scaled
    assert info.scaling_seconds > 0.0
    assert not any(buf.any() for buf in src.scaled._shrinker.scratch())


def test_a_frame_smaller_than_the_letterbox_gets_no_copy() -> None:
    copy = ScaledCopy(192)
    assert copy.of(np.full((90, 160, 3), 7, np.uint8)) is None  # the detector enlarges it itself
    assert copy.of(np.full((108, 192, 3), 7, np.uint8)) is not None
    assert copy.frames == 1


def test_nothing_inside_a_zone_reaches_the_detector_through_a_copy_made_before_the_zone_was_blanked() -> None:
    """The copy is scaled from the whole frame, zones included; the route blanks every copy
    pixel near a zone. Two frames that differ only inside the zone must give the detector the
    same copy, whatever the frame size and the zone."""
    rng = np.random.default_rng(5)
    copy = ScaledCopy(192)
    for size, polygon in [
        ((640, 360), [(0.0, 0.0), (0.45, 0.0), (0.45, 1.0), (0.0, 1.0)]),
        ((1280, 720), [(0.3, 0.2), (0.7, 0.25), (0.5, 0.8)]),
        ((333, 250), [(0.51, 0.49), (0.9, 0.49), (0.9, 0.9), (0.51, 0.9)]),
        ((1920, 1080), [(0.1, 0.1), (0.12, 0.1), (0.12, 0.13), (0.1, 0.13)]),
    ]:
        zones = ZoneMask([ZoneConfig(name="desk", polygon=polygon)])
        inside = zones.mask(size[1], size[0])
        outside = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        seen: list[Pixels] = []
        for _ in range(2):
            pixels = outside.copy()
            pixels[inside] = rng.integers(0, 256, (int(inside.sum()), 3), dtype=np.uint8)
            model = SeeingPipeline()
            route = FrameRoute(VisionStage.plain(model), zones)  # type: ignore[arg-type]
            route.carry(Frame(pixels, 0, 0.0, 0.0, lores=copy.of(pixels)))
            lores = model.seen_lores[0]
            assert lores is not None
            seen.append(lores)
        assert np.array_equal(seen[0], seen[1]), size
        assert seen[0].any()  # the rest of the frame did reach it


def test_no_copy_is_made_while_the_change_gate_skips_the_detector(
    sample_clip: Path, clock: FakeClock
) -> None:
    """An empty, still scene: the gate skips the detector and a copy would be thrown away, so
    the source makes one only when the detector ran on the frame before (and at the start)."""
    model = SeeingPipeline()  # finds nobody: the gate keeps skipping while nothing changes
    stage = VisionStage(model, GatingConfig(enabled=True, refresh_seconds=2.0))  # type: ignore[arg-type]
    route = FrameRoute(stage)
    src = open_source(str(sample_clip), SourceOptions(realtime=False, detector_side=192), clock)
    copied: list[bool] = []
    ran: list[bool] = []
    try:
        while (frame := src.read()) is not None:
            copied.append(frame.lores is not None)
            route.carry(frame)
            ran.append(stage.detected_last)
    finally:
        src.close()
    assert copied[0]
    assert copied[1:] == ran[:-1]
    assert ran.count(False) > 30
    assert ran.count(True) > 10
    assert isinstance(src, ReplaySource)
    assert src.info.scaled == sum(copied)


def test_a_copy_is_made_only_while_wanted_and_at_the_side_asked_for() -> None:
    copy = ScaledCopy(128)
    frame = np.full((360, 640, 3), 9, np.uint8)
    copy.detector_read(None)
    assert copy.of(frame) is None
    copy.detector_read(128)
    small = copy.of(frame)
    assert small is not None
    assert small.shape == (72, 128, 3)
    copy.detector_read(192)  # a reload changed the detector; the file source was not reopened
    large = copy.of(frame)
    assert large is not None
    assert large.shape == (108, 192, 3)
    assert copy.frames == 2


def test_the_detector_and_the_source_share_one_set_of_scratch_images() -> None:
    """At 1080p the chain's scratch is 2.2 MB, the first halving 1.5 MB of it: one set in the
    process, not one for the detector and one more for each source that makes copies."""
    frame = np.full((1080, 1920, 3), 80, np.uint8)
    halving = 960 * 540 * 3
    tracemalloc.start()
    try:
        fresh = VisionPipeline.from_config(VisionConfig(detector="full_range"))
        sources = [ScaledCopy(fresh.detector.size) for _ in range(2)]  # a source keeps its own
        for copy in sources:
            copy.of(frame)
            fresh.detect(frame)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(inclusive=True, domain=np.lib.tracemalloc_domain)]
        )
        assert fresh.scratch_is_zero()
        fresh.close()
    finally:
        tracemalloc.stop()
    assert sum(1 for t in snapshot.traces if t.size == halving) <= 1
