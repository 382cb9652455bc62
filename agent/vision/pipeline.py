"""The vision stage: BGR pixels in, ``FaceObservation``s (numbers only) out.

    with lease(frame) as pixels:
        faces = pipeline.analyze(pixels)

``analyze`` detects faces, measures each one against the quality gate, and classifies only
those that pass. Every scratch buffer that held pixels (letterboxed detector input, face
crops, the interpreters' input tensors) is zeroed before ``analyze`` returns, even when it
raises; the caller's lease zeroes the frame itself. The only arrays kept between calls are
that zeroed scratch and the read-only anchors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable
from agent.frame import Pixels, check_pixels
from agent.vision.detector import FaceDetector
from agent.vision.emotion import EmotionClassifier
from agent.vision.manifest import ModelSpec, default_models_dir, model_spec
from agent.vision.observation import Detection, FaceObservation
from agent.vision.precision import pick_precisions, with_float_io
from agent.vision.quality import GateLimits, gate, yaw_degrees
from agent.vision.runtime import BACKENDS, Model, choose_backend
from agent.vision.tiling import merge, tile_grid, to_frame

if TYPE_CHECKING:
    from agent.config import VisionConfig
    from agent.vision.gating import EmotionSchedule

logger = logging.getLogger(__name__)

EMOTION_MODEL = "emotion"


def open_models(accelerator: str, specs: list[ModelSpec], threads: int) -> list[Model]:
    """Open every model on one backend; ``auto`` falls back to the CPU (one log line) if the
    Edge TPU is present on paper but cannot be opened."""
    backend = choose_backend(accelerator, specs)
    try:
        return [backend.open(spec, threads) for spec in specs]
    except BackendUnavailable as exc:
        if accelerator != "auto":
            raise
        logger.info(
            "the Coral Edge TPU could not be opened, running inference on the CPU: %s",
            exc,
            extra={"fields": {"accelerator": "cpu", "requested": "auto"}},
        )
        return [BACKENDS["cpu"].open(spec, threads) for spec in specs]


class VisionPipeline:
    """Face detector, quality gate and emotion classifier over one frame at a time."""

    def __init__(
        self,
        detector: FaceDetector,
        classifier: EmotionClassifier,
        limits: GateLimits,
        max_faces: int,
        tiles: int = 1,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.limits = limits
        self.max_faces = max_faces
        self.tiles = tiles

    @classmethod
    def from_config(cls, cfg: VisionConfig) -> VisionPipeline:
        """Load and verify (sha256) the configured models; ModelError / BackendUnavailable on failure."""
        # OpenCV's own pool would run the resizes and warps on every core: each call then wakes
        # a worker (a context switch, about 0.8 ms of system time per frame on the bench clip)
        # for no gain at these sizes, and the stage would use more cores than vision.threads.
        cv2.setNumThreads(cfg.threads)
        models_dir = Path(cfg.models_dir) if cfg.models_dir is not None else default_models_dir()
        names = [f"face_detection_{cfg.detector}", EMOTION_MODEL]
        det_p, emo_p = pick_precisions(models_dir, names, cfg.precision, cfg.threads)
        det_spec = model_spec(models_dir, names[0], precision=det_p)
        emo_spec = model_spec(models_dir, EMOTION_MODEL, precision=emo_p)
        opened = open_models(cfg.accelerator, [det_spec, emo_spec], cfg.threads)
        det_model, emo_model = (with_float_io(m) for m in opened)  # int8 I/O: (de)quantized at the edges
        q = cfg.quality
        limits = GateLimits(
            min_face_px=q.min_face_px,
            min_sharpness=q.min_sharpness,
            min_brightness=q.min_brightness,
            max_brightness=q.max_brightness,
            max_yaw_degrees=q.max_yaw_degrees,
            normalise_below=q.normalise_below,
        )
        logger.info(
            "vision models loaded",
            extra={
                "fields": {"detector": det_spec.name, "backend": det_model.backend, "threads": cfg.threads}
            },
        )
        return cls(
            FaceDetector(det_model, det_spec, cfg.min_detection_score, cfg.max_faces),
            EmotionClassifier(emo_model, emo_spec),
            limits,
            cfg.max_faces,
            cfg.tiles,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels

    @property
    def backend(self) -> str:
        return self.detector.model.backend

    def detect(self, pixels: Pixels) -> list[Detection]:
        """Detector only (for gating and privacy zones); scratch is zeroed before returning."""
        check_pixels(pixels)
        try:
            return self._detect(pixels)
        finally:
            self.detector.clear()

    def _detect(self, pixels: Pixels) -> list[Detection]:
        """The whole frame, plus each tile of the grid when ``tiles`` > 1 (views, not copies)."""
        found = self.detector.detect(pixels)
        if self.tiles == 1:
            return found
        h, w = pixels.shape[:2]
        for tile in tile_grid(w, h, self.tiles):
            x0, y0, x1, y1 = tile
            found += [to_frame(d, tile, w, h) for d in self.detector.detect(pixels[y0:y1, x0:x1])]
        return merge(found, self.max_faces)

    def analyze(
        self, pixels: Pixels, schedule: EmotionSchedule | None = None, frame: int = 0
    ) -> list[FaceObservation]:
        """Observations for every face, best detection first; never keeps the pixels. With a
        ``schedule`` (agent.vision.gating), a face's recent reading is reused instead of
        classifying it again on frame ``frame``."""
        check_pixels(pixels)
        try:
            dets = self._detect(pixels)[: self.max_faces]
            return [self._observe(pixels, det, schedule, frame) for det in dets]
        finally:
            self.detector.clear()
            self.classifier.clear()

    def _observe(
        self, pixels: Pixels, det: Detection, schedule: EmotionSchedule | None = None, frame: int = 0
    ) -> FaceObservation:
        h, w = pixels.shape[:2]
        grey = self.classifier.align(pixels, det)
        sharpness, brightness = self.classifier.measure(grey)
        yaw = yaw_degrees([(x * w, y * h) for x, y in det.keypoints[:3]])
        quality = gate(min(det.box[2] * w, det.box[3] * h), sharpness, brightness, yaw, self.limits)
        probs = None
        if quality.passed:
            probs = schedule.reuse(frame, det.box) if schedule is not None else None
            if probs is None:
                probs = self.classifier.classify(
                    self.classifier.normalise(grey, brightness, self.limits.normalise_below)
                )
                if schedule is not None:
                    schedule.remember(frame, det.box, probs)
        x, y, bw, bh = det.box
        return FaceObservation(
            box=(round(x, 4), round(y, 4), round(bw, 4), round(bh, 4)),
            score=det.score,
            keypoints=tuple([(round(kx, 4), round(ky, 4)) for kx, ky in det.keypoints]),
            quality=quality,
            probs=probs,
        )

    def scratch(self) -> list[npt.NDArray[np.generic]]:
        """Every preallocated buffer that may hold pixels during a call (all zero between calls)."""
        return [*self.detector.scratch(), *self.classifier.scratch()]

    def scratch_is_zero(self) -> bool:
        models = (self.detector.model, self.classifier.model)
        return not any(np.any(b) for b in self.scratch()) and all(m.input_is_zero() for m in models)

    def clear(self) -> None:
        """Zero every scratch buffer and input tensor (``analyze`` and ``detect`` already do)."""
        self.detector.clear()
        self.classifier.clear()

    def close(self) -> None:
        """Zero the scratch and release the interpreters; the pipeline cannot be used after."""
        self.clear()
        self.detector.model.close()
        self.classifier.model.close()
