"""The frame's route, written once: admit, lease, zones blanked, vision, face filters, zeroed.

    route = FrameRoute(stage, zones, recorder)
    carried = route.carry(frame)     # the frame's pixels are all zero when this returns

``run`` (the service), ``analyze`` and both ``bench`` modes carry every frame through this
class, so a privacy fix (a lifetime, a zeroing) or a speed-up lands once, and ``bench``
measures the route the service takes. What differs between them is only the stage they give
it: the service's ``vision.gating`` with its CPU budget, or ``VisionStage.plain`` (every
frame detected, every face read, nothing dropped).

A frame over the CPU budget is still leased, so it is zeroed and its lifetime recorded, but
never seen by the models. Only numbers leave: ``Carried`` holds no pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.frame import Frame
from agent.privacy.lease import LifetimeRecorder, lease
from agent.privacy.zones import ZoneMask, filter_faces
from agent.vision.observation import FaceObservation
from agent.vision.stage import VisionStage


@dataclass(frozen=True, slots=True)
class Carried:
    """What one frame left behind: its place in the stream and its faces (numbers only)."""

    index: int
    stream_time: float
    """The video's own monotonic time (``Frame.stream_time``)."""
    elapsed: float
    """Seconds since the stream began: a file's position, or a camera's capture time counted
    from its first frame."""
    admitted: bool
    """False when the CPU budget dropped the frame unseen (then ``faces`` is empty)."""
    faces: list[FaceObservation]


@dataclass(frozen=True, slots=True)
class FaceFilter:
    """``policy.min_face_height`` and ``vision.max_faces``; the defaults keep every face."""

    min_face_height: float = 0.0
    max_faces: int | None = None


class FrameRoute:
    """One camera's frames, one at a time, from the source to observations."""

    def __init__(
        self,
        stage: VisionStage,
        zones: ZoneMask | None = None,
        recorder: LifetimeRecorder | None = None,
        faces: FaceFilter | None = None,
    ) -> None:
        self.stage = stage
        self.zones = zones if zones else None
        self.recorder = recorder
        self.filter = faces or FaceFilter()
        self._first_capture: float | None = None
        self._source_copy: Callable[[int | None, object | None, bool], None] | None = None
        """The last frame's ``detector_read``: how to tell its source what the next copy needs."""

    def carry(self, frame: Frame) -> Carried:
        """Admit, lease, blank the zones, analyse, zero; then drop faces the policy excludes."""
        now = frame.stream_time
        admitted = self.stage.admit(now)
        faces: list[FaceObservation] = []
        with lease(frame, self.recorder) as pixels:
            if admitted:
                lores = frame.lores
                if frame.cpu_scaled and frame.lores_zones is not self.zones:
                    # scaled before these zones were blanked: resized here instead (a grey
                    # frame's grey, spread over three channels, for that frame)
                    lores = None
                if self.zones is not None:
                    self.zones.apply(pixels)
                    if lores is not None and not frame.cpu_scaled:  # the ISP's, from the raw image
                        self.zones.apply_covering(lores, pixels.shape[:2])
                faces = self.stage.analyze(pixels, frame.index, now, lores)
                if frame.detector_read is not None:
                    frame.detector_read(self.stage.copy_wanted, self.zones, self.stage.grey_wanted)
                    self._source_copy = frame.detector_read
        if faces:
            faces = filter_faces(
                faces,
                min_face_height=self.filter.min_face_height,
                max_faces=self.filter.max_faces,
                zones=self.zones,
            )
        return Carried(frame.index, now, self._elapsed(frame), admitted, faces)

    def hand_over(self, successor: FrameRoute) -> None:
        """Tell the source of this route's frames what ``successor`` (the route a reload built)
        wants of its next copy, before that frame is decoded. The source blanks the zones into
        the frame itself before it scales it, which no route can undo: told only by the next
        frame, it would blank the old zones as well as the new into the first frame after the
        reload, and a face where a zone was removed would be missed there. A frame a camera's
        grabber thread had already decoded still carries both (the more private of the two
        policies, for a frame captured before the reload)."""
        if self._source_copy is not None:
            successor.adopt_source(self._source_copy)

    def adopt_source(self, detector_read: Callable[[int | None, object | None, bool], None]) -> None:
        """Take over the source of the route this one replaces, telling it what this one wants."""
        detector_read(self.stage.copy_wanted, self.zones, self.stage.grey_wanted)
        self._source_copy = detector_read

    def _elapsed(self, frame: Frame) -> float:
        if frame.source_time is not None:
            return frame.source_time
        if self._first_capture is None:
            self._first_capture = frame.captured_mono
        return frame.captured_mono - self._first_capture

    def close(self) -> None:
        """Zero the stage's thumbnails; the pipeline belongs to whoever built it."""
        self.stage.close()
