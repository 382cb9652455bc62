"""A reload that changes the zones, with the source's scaled copy (``Frame.lores``) on.

The source blanks the zones into the frame before it scales it; a reload that removed or
shrank a zone must not leave the old zone blanked in the next frame (a face there missed with
the copy on, found with it off). The service hands the source the new zones at the reload
(``FrameRoute.hand_over``), before the next frame is decoded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agent.camera.base import SourceOptions, open_source
from agent.clock import FakeClock
from agent.config import load_config
from agent.privacy.settings import ZoneConfig
from agent.privacy.zones import ZoneMask
from agent.route import FrameRoute
from agent.service import Service
from agent.vision.pipeline import VisionPipeline
from agent.vision.stage import VisionStage
from tests.test_route import SeeingPipeline
from tests.test_service import NO_GATE, write_config

FACE_ZONE = [(0.30, 0.10), (0.58, 0.10), (0.58, 0.36), (0.30, 0.36)]
"""Over Eileen Collins' face in the 512 x 512 astronaut (x 175-280, y 70-175)."""


def _zone(polygon: list[tuple[float, float]]) -> ZoneMask:
    return ZoneMask([ZoneConfig(name="desk", polygon=polygon)])


def _faces_after_zones_reload(
    image: Path, side: int | None, pipeline: VisionPipeline, clock: FakeClock
) -> list[list[object]]:
    """As the service does: the image replayed (looping, as fast as pulled, decoded in the
    analysing thread), carried along a route with a zone over the face; then a SIGHUP reload
    removes that zone (``build_processing`` builds a new route, the old one hands over) and
    the replay goes on."""
    src = open_source(str(image), SourceOptions(realtime=False, loop=True, detector_side=side), clock)
    before = FrameRoute(VisionStage.plain(pipeline), _zone(FACE_ZONE))
    after = FrameRoute(VisionStage.plain(pipeline), ZoneMask([]))  # the zone was removed
    out: list[list[object]] = []
    try:
        for i, route in enumerate((before, before, after, after)):
            if i == 2:
                before.hand_over(after)
            frame = src.read()
            assert frame is not None
            out.append([(f.box, f.probs) for f in route.carry(frame).faces])
    finally:
        src.close()
    return out


def test_the_first_frame_after_a_zones_reload_is_analysed_as_without_the_copy(
    pipeline: VisionPipeline, media: Path, clock: FakeClock
) -> None:
    """The same frames and zones give the same observations with the copy on and off: the
    frame decoded right after a reload that removed the zone over the face is read without
    it (before the hand-over it still had the old zone blanked into its pixels, and the face
    was missed with the copy on, found with it off)."""
    image = media / "astronaut.png"
    without_copy = _faces_after_zones_reload(image, None, pipeline, clock)
    with_copy = _faces_after_zones_reload(image, pipeline.detector.size, pipeline, clock)
    assert without_copy[0] == without_copy[1] == []  # the zone hides the face
    assert len(without_copy[2]) == 1  # zone removed: the face is seen at once
    assert with_copy == without_copy


def test_the_pixels_the_detector_gets_after_a_zones_reload_carry_only_the_new_zones(
    clock: FakeClock, tmp_path: Path
) -> None:
    """The same at the pixel level, with a fake model: a reload shrinks the zone from 60 % to
    20 % of the width; the next frame's pixels reach the model blanked over 20 % only, and
    its copy is the detector's (made with the new zones, so read)."""
    image = tmp_path / "noise.png"
    cv2.imwrite(str(image), np.random.default_rng(3).integers(1, 256, (360, 640, 3), dtype=np.uint8))
    left = lambda f: _zone([(0.0, 0.0), (f, 0.0), (f, 1.0), (0.0, 1.0)])  # noqa: E731
    model = SeeingPipeline()
    src = open_source(str(image), SourceOptions(realtime=False, loop=True, detector_side=192), clock)
    before = FrameRoute(VisionStage.plain(model), left(0.6))  # type: ignore[arg-type]
    after = FrameRoute(VisionStage.plain(model), left(0.2))  # type: ignore[arg-type]
    try:
        for route in (before, after):
            frame = src.read()
            assert frame is not None
            if route is after:
                assert frame.lores_zones is after.zones  # so the route reads the copy
            route.carry(frame)
            if route is before:
                before.hand_over(after)
    finally:
        src.close()
    seen = model.seen[1]
    assert seen[:, 300:384].all(), "pixels outside the reloaded (20 %) zone reached the model blanked"
    assert not seen[:, :128].any()  # the new zone is blanked
    assert model.seen_lores[1] is not None  # and the copy made with it was read


def test_the_service_after_a_sighup_that_shrinks_a_zone(tmp_path: Path) -> None:
    """The same through the service: a looping image, a zone over the left 60 %; a SIGHUP
    reload shrinks it to the left 20 %. The first frame analysed after the reload reaches the
    model blanked over the new 20 % only, as it does with the copy off."""
    image = tmp_path / "noise.png"
    cv2.imwrite(str(image), np.random.default_rng(3).integers(1, 256, (360, 640, 3), dtype=np.uint8))

    def zone(f: float) -> str:
        return f"policy: {{zones: [{{name: desk, polygon: [[0, 0], [{f}, 0], [{f}, 1], [0, 1]]}}]}}\n"

    path = write_config(tmp_path, str(image), extra=NO_GATE + zone(0.6))
    path.write_text(path.read_text().replace("loop: false", "loop: true"))
    model = SeeingPipeline()
    service = Service(
        load_config(path), config_path=path, clock=FakeClock(start=1_800_000_000.0),
        pipeline_factory=lambda _c: model,  # type: ignore[arg-type,return-value]
    )
    try:
        service.start()
        service.step()
        service.step()
        path.write_text(path.read_text().replace("0.6", "0.2"))
        assert service.reload()
        service.step()
    finally:
        service.close()
    assert len(model.seen) == 3
    assert model.seen[2][:, 300:384].all(), "the old zone's pixels were blanked after the reload"
