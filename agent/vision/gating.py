"""Spend CPU where the scene changes: a change gate before the detector, emotion re-reads on a
schedule, and a frame budget that drops frames to hold a CPU share.

    gate = ChangeGate(settings)            # one per camera
    if gate.should_detect(pixels, now):    # inside the frame's lease
        faces = pipeline.analyze(pixels)
        gate.record(len(faces), now)
    else:
        faces = []                         # static scene, and nobody was there last time

**What the gate keeps.** A ``thumb_width`` x ``thumb_height`` grey thumbnail (default 32 x 18
= 576 bytes) of the frame at the last detection, to compare the next frames with. It is derived
from pixels, so it is kept as small as the job allows (a face is a blur of a few cells), is
never logged, published or written, and ``close`` zeroes it with the two scratch buffers.

**Why the output does not change.** Detection is skipped only when (1) the last detection
found nobody, (2) no thumbnail cell moved by more than ``pixel_delta`` grey levels since, and
(3) less than ``refresh_seconds`` passed. A face that walks in changes cells, so the skipped
frames are frames where the ungated pipeline would also find nobody; a test runs the demo clip
both ways and compares every frame.

Pure numpy plus one ``cv2.resize`` and ``cv2.cvtColor`` on the thumbnail, imported when a gate
first computes one (a disabled gate, as in ``analyze``, needs no OpenCV); no model, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.frame import Pixels
from agent.vision.settings import GatingConfig

Box = tuple[float, float, float, float]
Probs = tuple[tuple[str, float], ...]


class ChangeGate:
    """Decides per frame whether the face detector must run (see the module docstring)."""

    def __init__(self, settings: GatingConfig) -> None:
        self.settings = settings
        size = (settings.thumb_height, settings.thumb_width)
        self._small = np.zeros((*size, 3), np.uint8)
        self._current = np.zeros(size, np.uint8)
        self._reference = np.zeros(size, np.uint8)
        self._diff = np.zeros(size, np.int16)
        self._moved = np.zeros(size, np.bool_)
        self._strided: Pixels = np.zeros((0, 0, 3), np.uint8)
        """Every k-th pixel of a large frame: copied here, not into a buffer OpenCV would free
        unzeroed, and zeroed before ``should_detect`` returns."""
        self._has_reference = False
        self._faces_present = False
        self._last_detect = -math.inf
        self.checks = 0
        self.skipped = 0

    def _buffers(self) -> tuple[npt.NDArray[np.generic], ...]:
        return (self._small, self._current, self._reference, self._diff, self._moved, self._strided)

    def _thumbnail(self, pixels: Pixels) -> None:
        """Area-average every k-th pixel (at least 8 x 8 samples per cell remain): a 1080p frame
        costs about what a 360p one does."""
        w, h = self.settings.thumb_width, self.settings.thumb_height
        k = min(pixels.shape[1] // (w * 8), pixels.shape[0] // (h * 8))
        src = pixels
        if k >= 3:  # the strided copy is worth it from 3
            view = pixels[::k, ::k]
            if self._strided.shape != view.shape:
                self._strided = np.zeros(view.shape, np.uint8)
            np.copyto(self._strided, view)
            src = self._strided
        import cv2  # noqa: PLC0415 - only an enabled gate needs OpenCV (see the module docstring)

        if src.ndim == 2:  # a grey frame (agent.frame)
            cv2.resize(src, (w, h), dst=self._current, interpolation=cv2.INTER_AREA)
        else:
            cv2.resize(src, (w, h), dst=self._small, interpolation=cv2.INTER_AREA)
            cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._current)
            self._small.fill(0)
        self._strided.fill(0)

    def changed_cells(self) -> int:
        """Cells of the current thumbnail more than ``pixel_delta`` away from the reference
        (in preallocated buffers: no temporary derived from the frame is left unzeroed)."""
        np.subtract(self._current, self._reference, out=self._diff, dtype=np.int16)
        np.abs(self._diff, out=self._diff)
        np.greater(self._diff, self.settings.pixel_delta, out=self._moved)
        moved = int(np.count_nonzero(self._moved))
        self._diff.fill(0)
        self._moved.fill(False)
        return moved

    def should_detect(self, pixels: Pixels, now: float) -> bool:
        """True when the detector must run on this frame; ``now`` is monotonic seconds."""
        self.checks += 1
        if not self.settings.enabled:
            return True
        self._thumbnail(pixels)
        run = (
            not self._has_reference
            or self._faces_present
            or not 0 <= now - self._last_detect < self.settings.refresh_seconds  # or time went back
            or self.changed_cells() >= self.settings.min_changed_cells
        )
        if not run:
            self.skipped += 1
        return run

    def record(self, faces: int, now: float) -> None:
        """After a detection: this frame becomes the reference; remember whether anyone was there."""
        self._reference[...] = self._current
        self._has_reference = True
        self._faces_present = faces > 0
        self._last_detect = now

    def end_frame(self) -> None:
        """Zero the current frame's thumbnail once its decision is made (and recorded): between
        frames only the reference is kept."""
        self._current.fill(0)

    def close(self) -> None:
        """Zero the thumbnails (they were derived from pixels) and forget the reference; the
        gate can be used again and starts with a detection."""
        for buf in self._buffers():
            buf.fill(0)
        self._has_reference = False
        self._faces_present = False
        self._last_detect = -math.inf

    def is_zero(self) -> bool:
        return not any(np.any(b) for b in self._buffers())


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Reading:
    frame: int
    box: Box
    probs: Probs


class EmotionSchedule:
    """Re-read a face's emotion every N frames, or at once when its box moves or resizes.

    Numbers only: a reading is (frame index, normalised box, probabilities). ``reuse`` returns
    the last reading of a face whose box still overlaps it by ``min_iou``, if younger than N
    frames; else None, and the caller classifies and calls ``remember``."""

    def __init__(self, every_frames: int, min_iou: float) -> None:
        self.every = every_frames
        self.min_iou = min_iou
        self._readings: list[_Reading] = []
        self._frame: int | None = None
        self._claimed: list[_Reading] = []
        self.reused = 0
        self.read = 0

    def reuse(self, frame: int, box: Box) -> Probs | None:
        # a frame index that went back (a reopened source starts at 0 again) voids every reading
        self._readings = [r for r in self._readings if 0 <= frame - r.frame < self.every]
        if frame != self._frame:
            self._frame, self._claimed = frame, []
        free = [r for r in self._readings if r.frame != frame and all(r is not c for c in self._claimed)]
        best = max(free, key=lambda r: iou(r.box, box), default=None)
        if best is None or iou(best.box, box) < self.min_iou:
            return None
        self._claimed.append(best)  # one earlier reading per face of this frame
        self.reused += 1
        return best.probs

    def clear(self) -> None:
        """Forget every reading (capture stopped: the next faces may be other people)."""
        self._readings.clear()

    def remember(self, frame: int, box: Box, probs: Probs) -> None:
        self.read += 1
        self._readings = [r for r in self._readings if iou(r.box, box) < self.min_iou]
        self._readings.append(_Reading(frame, box, probs))


class FrameBudget:
    """Adaptive frame rate: admit a frame only if the vision stage stays within ``cpu_budget``.

    After each analysed frame, ``spent`` takes the CPU seconds it cost; a smoothed cost ``c``
    gives the shortest interval between admitted frames, ``c / cpu_budget``. Frames that come
    sooner are dropped and counted (``dropped``), for the health topic and the audit log."""

    def __init__(self, cpu_budget: float, smoothing: float = 0.2) -> None:
        self.cpu_budget = cpu_budget
        self.smoothing = smoothing
        self.cost: float | None = None
        self._last_admit = -math.inf
        self.admitted = 0
        self.dropped = 0

    @property
    def min_interval(self) -> float:
        return 0.0 if self.cost is None else self.cost / self.cpu_budget

    def admit(self, now: float) -> bool:
        if 0 <= now - self._last_admit < self.min_interval - 1e-9:  # time going back: a new source
            self.dropped += 1
            return False
        self._last_admit = now
        self.admitted += 1
        return True

    def restart(self) -> None:
        """Forget the cost learnt so far (the counts stay): the next frame is admitted."""
        self.cost = None
        self._last_admit = -math.inf

    def spent(self, cpu_seconds: float) -> None:
        c = max(cpu_seconds, 0.0)
        self.cost = c if self.cost is None else (1 - self.smoothing) * self.cost + self.smoothing * c
