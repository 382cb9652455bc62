"""The vision stage as the service and ``bench`` run it: the pipeline behind the change gate,
the emotion re-read schedule and the CPU budget of ``vision.gating`` (agent.vision.gating).

    stage = VisionStage(pipeline, cfg.vision.gating)
    if stage.admit(now):                     # outside the lease is fine: numbers only
        with lease(frame) as pixels:
            faces = stage.analyze(pixels, frame.index, now)
    else:
        ...                                  # dropped for the budget, counted in stage.counters

``agent.route.FrameRoute`` is that sequence, written once; ``VisionStage.plain`` is the stage
of ``analyze`` and ``bench``'s raw mode (every frame detected, every face read, no budget).

``now`` is the video's own time in seconds, monotonic: a file's position, a camera's capture
monotonic clock. It must never be the wall clock: a clock step backwards would stall the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Protocol

from agent.frame import Pixels, check_pixels
from agent.vision.gating import ChangeGate, EmotionSchedule, FrameBudget
from agent.vision.observation import FaceObservation
from agent.vision.settings import GatingConfig


class Analyzer(Protocol):
    """What the stage needs of ``agent.vision.pipeline.VisionPipeline`` (which loads the
    runtime, so it is imported only when the agent runs)."""

    def analyze(
        self,
        pixels: Pixels,
        schedule: EmotionSchedule | None = None,
        frame: int = 0,
        *,
        lores: Pixels | None = None,
    ) -> list[FaceObservation]: ...

    @property
    def detector_side(self) -> int:
        """The detector's square input: the size of ``Frame.lores`` it reads."""
        ...

    @property
    def grey_frames(self) -> bool:
        """Grey frames with a colour copy serve it as well as colour ones (``agent.frame``)."""
        ...


PLAIN = GatingConfig(enabled=False, emotion_every_frames=1)
"""Gate off, every face read on every frame."""


@dataclass(frozen=True)
class StageCounters:
    """Totals since the stage was built: what gating saved and what the budget dropped."""

    frames: int
    detector_runs: int
    detector_skipped: int
    emotion_reads: int
    emotion_reused: int
    budget_dropped: int

    def plus(self, other: StageCounters) -> StageCounters:
        return StageCounters(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


ZERO_COUNTERS = StageCounters(0, 0, 0, 0, 0, 0)


class VisionStage:
    """One per camera. Gating disabled and ``emotion_every_frames: 1`` give the plain pipeline:
    every admitted frame is detected and every face classified."""

    def __init__(
        self,
        pipeline: Analyzer,
        settings: GatingConfig,
        cpu_time: Callable[[], float] = time.process_time,
        carried: StageCounters = ZERO_COUNTERS,
        *,
        budgeted: bool = True,
    ) -> None:
        """``carried``: the totals of the stage this one replaces (a config reload), so the
        health topic keeps counting since start. ``budgeted=False``: no frame is ever dropped
        for ``cpu_budget``."""
        self.pipeline = pipeline
        self._carried = carried
        self.settings = settings
        self._cpu_time = cpu_time
        self.gate = ChangeGate(settings)
        self.schedule = (
            EmotionSchedule(settings.emotion_every_frames, settings.emotion_min_iou)
            if settings.emotion_every_frames > 1
            else None
        )
        self.budget = FrameBudget(settings.cpu_budget if budgeted else math.inf)
        self._frames = 0
        self.detected_last = True
        """Whether the last frame analysed went to the detector (the change gate let it)."""
        self._detector_runs = 0
        self._emotion_reads = 0

    @classmethod
    def plain(cls, pipeline: Analyzer) -> VisionStage:
        """Every frame detected, every face read, none dropped: the pipeline as it is."""
        return cls(pipeline, PLAIN, budgeted=False)

    def admit(self, now: float) -> bool:
        """False when this frame would push the stage over its CPU budget (counted as dropped)."""
        return self.budget.admit(now)

    def analyze(
        self, pixels: Pixels, frame: int, now: float, lores: Pixels | None = None
    ) -> list[FaceObservation]:
        """Faces of one admitted frame; an empty list when the gate found the scene unchanged
        and empty, which is what the detector would have said (docs/quantization.md).
        ``lores``: the camera's own copy at the detector's size (``Frame.lores``)."""
        check_pixels(pixels)  # before the gate's OpenCV calls: a bad frame is a SourceError
        c0 = self._cpu_time()
        self._frames += 1
        faces: list[FaceObservation] = []
        try:
            self.detected_last = self.gate.should_detect(pixels, now)
            if self.detected_last:
                self._detector_runs += 1
                faces = (
                    self.pipeline.analyze(pixels, lores=lores)
                    if self.schedule is None
                    else self.pipeline.analyze(pixels, self.schedule, frame, lores=lores)
                )
                self.gate.record(len(faces), now)
                if self.schedule is None:
                    self._emotion_reads += sum(1 for f in faces if f.probs is not None)
        finally:
            self.gate.end_frame()
        self.budget.spent(self._cpu_time() - c0)
        return faces

    @property
    def copy_wanted(self) -> int | None:
        """For ``Frame.detector_read``: the detector's side when the last frame went to it
        (the next frame's copy would be read), None when the change gate skipped it."""
        return self.pipeline.detector_side if self.detected_last else None

    @property
    def grey_wanted(self) -> bool:
        """For ``Frame.detector_read``: the next frame may come grey beside its colour copy."""
        return self.pipeline.grey_frames

    def pause(self) -> None:
        """Capture stopped (privacy mode, schedule): zero the gate's reference thumbnail and
        forget the emotion readings, so nothing derived from the last frames outlives them."""
        self.gate.close()
        if self.schedule is not None:
            self.schedule.clear()

    def new_window(self) -> None:
        """A new statistics window begins: forget what the frames of the last one left (the
        gate's reference, the emotion readings, the budget's cost), so nothing this window
        counts depends on the faces of the one before. The next frame runs the detector."""
        self.pause()
        self.budget.restart()

    @property
    def counters(self) -> StageCounters:
        reads = self.schedule.read if self.schedule is not None else self._emotion_reads
        reused = self.schedule.reused if self.schedule is not None else 0
        return self._carried.plus(StageCounters(
            frames=self._frames,
            detector_runs=self._detector_runs,
            detector_skipped=self.gate.skipped,
            emotion_reads=reads,
            emotion_reused=reused,
            budget_dropped=self.budget.dropped,
        ))

    def close(self) -> None:
        """Zero the gate's thumbnails; the pipeline belongs to the caller."""
        self.gate.close()
