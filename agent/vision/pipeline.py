"""The vision stage: BGR pixels (or grey, with the source's colour copy) in,
``FaceObservation``s (numbers only) out.

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
import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable, ModelError
from agent.frame import Pixels, check_pixels, is_grey
from agent.memtrim import trim_file_pages
from agent.vision.detector import FaceDetector
from agent.vision.emotion import CROP, EmotionClassifier
from agent.vision.manifest import (
    EMOTION_MODEL,
    MANIFEST_NAME,
    REBUILD_HINT,
    ModelSpec,
    model_spec,
    models_folder,
)
from agent.vision.observation import Detection, FaceObservation, Quality
from agent.vision.precision import pick_precisions, with_float_io
from agent.vision.quality import GateLimits, gate, yaw_degrees
from agent.vision.runtime import BACKENDS, Model, choose_backend
from agent.vision.tiling import merge, tile_grid, to_frame

if TYPE_CHECKING:
    from agent.vision.gating import EmotionSchedule
    from agent.vision.settings import VisionConfig

logger = logging.getLogger(__name__)

PADDED_MIN_SIDE = 0.4
"""The padded retry is for faces that fill a still: it keeps only boxes at least this share
of the image wide or high (on scikit-image's logo it found a 0.515 "face" 14 % wide)."""
PADDED_MAX_INPUTS = 4
"""The padded retry shrinks a still to at most this many detector inputs on its longer side
first: padded at full size, a 64 Mpx still (192 MB) took 768 MB more, only to be shrunk to
the detector's 192 x 192 (found by review: 1.3 GB RSS for a face-less 8192 x 8192 PNG)."""


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


REGRESSORS = 16
"""Values per anchor of a BlazeFace detector's box output: dx, dy, w, h and six keypoints."""


def fit_problem(model: Model, spec: ModelSpec) -> str | None:
    """Why the opened model cannot be the one ``spec`` (its manifest entry) describes, or None.

    Checked once at load, so a manifest that names the wrong file (with that file's own sha256)
    or the wrong labels is refused at start instead of failing on every frame with a face."""
    if model.input_shape != spec.input_shape:
        found_shape, said = list(model.input_shape), list(spec.input_shape)
        return f"it takes input {found_shape}, the entry's input.shape is {said}"
    return _precision_problem(model, spec) or _output_problem(model, spec)


def _output_problem(model: Model, spec: ModelSpec) -> str | None:
    """Outputs a detector with the entry's anchors, or a classifier of its labels, would not have."""
    shapes = [list(s) for s in model.output_shapes]
    if spec.anchors is not None:
        regressors = [s for s in shapes if s[-1:] == [REGRESSORS]]
        scores = [s for s in shapes if s[-1:] == [1]]
        if len(shapes) != 2 or len(regressors) != 1 or len(scores) != 1:
            return (
                f"its outputs are {shapes}; a face detector has two, one of {REGRESSORS} values per "
                "anchor and one of 1"
            )
        found = math.prod(scores[0])
        if found != spec.anchors.num_anchors:
            return f"it scores {found} anchors, the entry's anchors.num_anchors is {spec.anchors.num_anchors}"
        return None
    if len(shapes) != 1 or math.prod(shapes[0]) != len(spec.labels):
        return f"its outputs are {shapes}; the entry's {len(spec.labels)} labels need one output of as many"
    return None


def _precision_problem(model: Model, spec: ModelSpec) -> str | None:
    """A float entry's file must take float32, an int8 variant's int8: the tensors would be
    (de)quantized either way (``with_float_io``), but ``bench``, ``selfcheck`` and the logs would
    name a precision that is not the one running, and ``auto`` would compare the wrong files.
    An Edge TPU opens its own compiled file, which is integer whatever the entry."""
    if model.backend != "cpu":
        return None
    found = np.dtype(model.input_dtype).name
    integer = found in ("int8", "uint8")
    if spec.precision == "float" and integer:
        return (
            f"it takes {found} input, the entry's float file must take float32 (an int8 file goes "
            "under variants)"
        )
    if spec.precision != "float" and not integer:
        return f"it takes {found} input, its {spec.precision} variant must take {spec.precision}"
    return None


def fits(model: Model, spec: ModelSpec, models_dir: Path) -> None:
    """ModelError naming the manifest entry when ``fit_problem`` finds one."""
    problem = fit_problem(model, spec)
    if problem is not None:
        raise _misfit(spec, models_dir, problem)


def _misfit(spec: ModelSpec, models_dir: Path, problem: str) -> ModelError:
    return ModelError(
        f"{models_dir / MANIFEST_NAME}: entry {spec.name!r} does not describe its model file "
        f"{spec.path}: {problem}; {REBUILD_HINT}"
    )


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
        self._warm = False
        self._crops: list[npt.NDArray[np.uint8]] = []
        self._used = 0
        self.stills = False
        """Every frame is a still image (``analyze`` on an image or folder): a frame in which
        nothing is found is searched again on a padded copy (``_detect_padded``)."""

    @classmethod
    def from_config(cls, cfg: VisionConfig) -> VisionPipeline:
        """Load and verify (sha256) the configured models; ModelError / BackendUnavailable on failure."""
        # OpenCV's own pool would run the resizes and warps on every core: each call then wakes
        # a worker (a context switch, about 0.8 ms of system time per frame on the bench clip)
        # for no gain at these sizes, and the stage would use more cores than vision.threads.
        cv2.setNumThreads(cfg.threads)
        trim_file_pages()  # the imports' library pages; again once the models are open
        models_dir = models_folder(cfg.models_dir)
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
        trim_file_pages()
        logger.info(
            "vision models loaded",
            extra={
                "fields": {"detector": det_spec.name, "backend": det_model.backend, "threads": cfg.threads}
            },
        )
        fits(det_model, det_spec, models_dir)
        fits(emo_model, emo_spec, models_dir)
        try:
            detector = FaceDetector(det_model, det_spec, cfg.min_detection_score, cfg.max_faces)
        except ValueError as exc:  # the anchors the entry describes are not the model's
            raise _misfit(det_spec, models_dir, str(exc)) from exc
        try:
            classifier = EmotionClassifier(emo_model, emo_spec)
        except ValueError as exc:
            raise _misfit(emo_spec, models_dir, str(exc)) from exc
        return cls(detector, classifier, limits, cfg.max_faces, cfg.tiles)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.labels

    @property
    def detector_side(self) -> int:
        return self.detector.size

    @property
    def grey_frames(self) -> bool:
        """Frames may come grey (``agent.frame``): the detector reads only the whole frame,
        from the source's colour copy (no tiles, no padded stills, which read the frame's
        colour)."""
        return self.tiles == 1 and not self.stills

    @property
    def backend(self) -> str:
        return self.detector.model.backend

    @property
    def precision(self) -> str:
        """What runs: one word, or detector/emotion when ``auto`` chose apart."""
        return "/".join(dict.fromkeys([self.detector.spec.precision, self.classifier.spec.precision]))

    def detect(self, pixels: Pixels, still: bool = False) -> list[Detection]:
        """Detector only (for gating and privacy zones); scratch is zeroed before returning."""
        check_pixels(pixels)
        try:
            return self._detect(pixels, still)
        finally:
            self.detector.clear()

    def _detect(
        self, pixels: Pixels, still: bool = False, lores: Pixels | None = None
    ) -> list[Detection]:
        """The whole frame (from ``lores`` when the camera scaled it), plus each tile of the grid
        when ``tiles`` > 1 (views, not copies); for a ``still`` in which nothing was found, the
        frame padded with black as well. A grey frame goes to the detector only through its
        colour copy; where that is missing (a frame decoded before a reload asked for tiles or
        for another detector) its grey is spread over three channels for this frame."""
        if is_grey(pixels) and (self.tiles > 1 or still or not self.detector.reads(lores, pixels)):
            colour: Pixels = np.empty((*pixels.shape, 3), np.uint8)
            cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR, dst=colour)
            try:
                return self._detect(colour, still, lores)
            finally:
                colour.fill(0)
        found = self.detector.detect(pixels, lores)
        if self.tiles > 1:
            h, w = pixels.shape[:2]
            for tile in tile_grid(w, h, self.tiles):
                x0, y0, x1, y1 = tile
                found += [to_frame(d, tile, w, h) for d in self.detector.detect(pixels[y0:y1, x0:x1])]
            found = merge(found, self.max_faces)
        if still and not found:
            return self._detect_padded(pixels)
        return found

    def _detect_padded(self, pixels: Pixels) -> list[Detection]:
        """Detect on the frame with a black border of half its size on each side, boxes mapped
        back. A face that fills the frame (a tight 112 px portrait: score 0.47, under the
        threshold) is larger than BlazeFace's anchors expect; padded it scores 0.81. The padded
        copy (and the shrunk one a large still is padded from) holds pixels, so it is zeroed
        before it is dropped."""
        longest = PADDED_MAX_INPUTS * self.detector.size
        if max(pixels.shape[:2]) > longest:  # the detector shrinks it anyway: first, and small
            r = longest / max(pixels.shape[:2])
            size = (max(round(pixels.shape[1] * r), 1), max(round(pixels.shape[0] * r), 1))
            small: Pixels = np.empty((size[1], size[0], 3), np.uint8)
            cv2.resize(pixels, size, dst=small, interpolation=cv2.INTER_AREA)
            try:
                return self._detect_padded(small)
            finally:
                small.fill(0)
        h, w = pixels.shape[:2]
        by, bx = h // 2, w // 2
        padded: Pixels = np.zeros((h + 2 * by, w + 2 * bx, 3), np.uint8)
        padded[by : by + h, bx : bx + w] = pixels
        try:
            found = self.detector.detect(padded)
        finally:
            padded.fill(0)
        pw, ph = w + 2 * bx, h + 2 * by
        mapped = [_unpad(d, (bx, by), (w, h), (pw, ph)) for d in found]
        return [d for d in mapped if max(d.box[2], d.box[3]) >= PADDED_MIN_SIDE]

    def analyze(
        self,
        pixels: Pixels,
        schedule: EmotionSchedule | None = None,
        frame: int = 0,
        still: bool = False,
        *,
        lores: Pixels | None = None,
    ) -> list[FaceObservation]:
        """Observations for every face, best detection first; never keeps the pixels. With a
        ``schedule`` (agent.vision.gating), a face's recent reading is reused instead of
        classifying it again on frame ``frame``. ``still``: a single image, where a face that
        fills the frame is looked for on a padded copy too when nothing else is found.
        ``lores``: ``Frame.lores``, used by the detector when it has the letterbox's size."""
        check_pixels(pixels)
        if not self._warm:  # the caller's own start-up (audit log, MQTT, decoder) is loaded by now
            self._warm = True
            trim_file_pages()
        try:
            dets = self._detect(pixels, still or self.stills, lores)[: self.max_faces]
            measured = [self._measure(pixels, det, i) for i, det in enumerate(dets)]
            return [self._observe(det, i, q, schedule, frame) for i, (det, q) in enumerate(measured)]
        finally:
            self.detector.clear()
            self.classifier.clear()
            self._zero_crops()

    def _measure(self, pixels: Pixels, det: Detection, i: int) -> tuple[Detection, tuple[Quality, float]]:
        """Crop and gate one face, keeping its crop for ``_observe``. Every face is cropped
        before any is classified: the frame is then still cached for the next crop, and the
        emotion model's weights for its next invoke (the first invoke evicts the frame)."""
        h, w = pixels.shape[:2]
        crop = self.classifier.align(pixels, det, out=self._crop(i))
        if self.classifier.cut_by_edge:  # measure the face, not the black beyond the frame
            sharpness, brightness = self.classifier.measure(
                self.classifier.align(pixels, det, cv2.BORDER_REPLICATE)
            )
        else:
            sharpness, brightness = self.classifier.measure(crop)
        yaw = yaw_degrees([(x * w, y * h) for x, y in det.keypoints[:3]])
        quality = gate(min(det.box[2] * w, det.box[3] * h), sharpness, brightness, yaw, self.limits)
        return det, (quality, brightness)

    def _crop(self, i: int) -> npt.NDArray[np.uint8]:
        """Face ``i``'s crop buffer (scratch: zeroed by ``clear``)."""
        while len(self._crops) <= i:
            self._crops.append(np.zeros((CROP, CROP), np.uint8))
        self._used = max(self._used, i + 1)
        return self._crops[i]

    def _zero_crops(self) -> None:
        for crop in self._crops[: self._used]:
            crop.fill(0)
        self._used = 0

    def _observe(
        self,
        det: Detection,
        i: int,
        measured: tuple[Quality, float],
        schedule: EmotionSchedule | None = None,
        frame: int = 0,
    ) -> FaceObservation:
        quality, brightness = measured
        probs = None
        if quality.passed:
            probs = schedule.reuse(frame, det.box) if schedule is not None else None
            if probs is None:
                probs = self.classifier.classify(
                    self.classifier.normalise(self._crops[i], brightness, self.limits.normalise_below)
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
        return [*self.detector.scratch(), *self.classifier.scratch(), *self._crops]

    def scratch_is_zero(self) -> bool:
        models = (self.detector.model, self.classifier.model)
        return not any(np.any(b) for b in self.scratch()) and all(m.input_is_zero() for m in models)

    def clear(self) -> None:
        """Zero every scratch buffer and input tensor (``analyze`` and ``detect`` already do)."""
        self.detector.clear()
        self.classifier.clear()
        self._zero_crops()

    def close(self) -> None:
        """Zero the scratch and release the interpreters; the pipeline cannot be used after."""
        self.clear()
        self.detector.model.close()
        self.classifier.model.close()


def _unpad(
    d: Detection, offset: tuple[int, int], size: tuple[int, int], padded: tuple[int, int]
) -> Detection:
    """A detection on the padded frame (``padded`` w, h; the image of ``size`` at ``offset``)
    in the image's own normalised coordinates."""
    (bx, by), (w, h), (pw, ph) = offset, size, padded

    def fx(v: float) -> float:
        return (v * pw - bx) / w

    def fy(v: float) -> float:
        return (v * ph - by) / h

    x0, y0 = min(max(fx(d.box[0]), 0.0), 1.0), min(max(fy(d.box[1]), 0.0), 1.0)
    x1 = min(max(fx(d.box[0] + d.box[2]), 0.0), 1.0)
    y1 = min(max(fy(d.box[1] + d.box[3]), 0.0), 1.0)
    return Detection(
        box=(x0, y0, x1 - x0, y1 - y0),
        score=d.score,
        keypoints=tuple((fx(kx), fy(ky)) for kx, ky in d.keypoints),
    )
