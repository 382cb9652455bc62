"""The face detector: letterbox a BGR frame into BlazeFace's square input, run it, decode.

All pixel copies live in preallocated scratch buffers that ``clear`` zeroes; the detector keeps
no other array between calls except its read-only anchors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import Pixels
from agent.vision.blazeface import F32, decode, generate_anchors, weighted_nms
from agent.vision.manifest import ModelSpec
from agent.vision.observation import Detection
from agent.vision.runtime import Model


@dataclass(frozen=True)
class Placement:
    """A W x H frame resized to ``w`` x ``h`` and put at (x, y) inside an S x S input.

    ``cv2.resize`` scales continuous coordinates by exactly w/W and h/H, so ``to_frame``
    maps the model's output back without drift.
    """

    frame_w: int
    frame_h: int
    size: int
    x: int
    y: int
    w: int
    h: int

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, size: int) -> Placement:
        scale = size / max(frame_w, frame_h)
        w = max(1, min(size, round(frame_w * scale)))
        h = max(1, min(size, round(frame_h * scale)))
        return cls(frame_w, frame_h, size, (size - w) // 2, (size - h) // 2, w, h)

    def to_frame(self, xy: F32) -> F32:
        """Normalised input coordinates (..., 2) to normalised frame coordinates."""
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] * self.size - self.x) / self.w
        out[..., 1] = (xy[..., 1] * self.size - self.y) / self.h
        return out


class FaceDetector:
    """BlazeFace (short- or full-range) over any frame size, with exact letterbox mapping."""

    def __init__(self, model: Model, spec: ModelSpec, min_score: float, max_faces: int) -> None:
        if spec.anchors is None:
            raise ValueError(f"{spec.name} has no anchor spec in the manifest")
        self.model = model
        self.spec = spec
        self.size = spec.anchors.input_size
        self.min_score = max(min_score, 1e-3)
        self.max_faces = max_faces
        anchors = generate_anchors(spec.anchors)
        anchors.flags.writeable = False
        self.anchors = anchors
        self._canvas = np.zeros((self.size, self.size, 3), np.uint8)
        self._rgb = np.zeros((self.size, self.size, 3), np.uint8)
        self._resized: dict[tuple[int, int], Pixels] = {}

    def _buffer(self, w: int, h: int) -> Pixels:
        """A scratch image of w x h, allocated once per size and zeroed by ``clear``."""
        buf = self._resized.get((w, h))
        if buf is None:
            buf = self._resized.setdefault((w, h), np.zeros((h, w, 3), np.uint8))
        return buf

    def _resize(self, src: Pixels, w: int, h: int, interpolation: int) -> Pixels:
        out = self._buffer(w, h)
        cv2.resize(src, (w, h), dst=out, interpolation=interpolation)
        return out

    def _shrink(self, pixels: Pixels, w: int, h: int) -> Pixels:
        """Resize to w x h without aliasing, cheaply (OpenCV's INTER_AREA is slow for
        non-integer ratios): halve while at least 4x too big, bilinear to exactly 2x, then
        halve once more (a 2 x 2 mean). Each step scales continuous coordinates by its own size
        ratio, so together they scale by exactly w / W and h / H."""
        src = pixels
        linear = cv2.INTER_LINEAR
        while src.shape[1] // 2 >= 2 * w and src.shape[0] // 2 >= 2 * h:
            src = self._resize(src, src.shape[1] // 2, src.shape[0] // 2, linear)
        if src.shape[1] >= 2 * w and src.shape[0] >= 2 * h:
            if src.shape[1] != 2 * w or src.shape[0] != 2 * h:
                src = self._resize(src, 2 * w, 2 * h, linear)
            return self._resize(src, w, h, linear)
        if src.shape[1] == w and src.shape[0] == h:
            return src
        return self._resize(src, w, h, cv2.INTER_AREA if src.shape[1] > w else linear)

    def _letterbox(self, pixels: Pixels) -> Placement:
        """Resize, pad with black, BGR -> RGB and [0, 255] -> [-1, 1] into the model's input."""
        p = Placement.fit(pixels.shape[1], pixels.shape[0], self.size)
        resized = self._shrink(pixels, p.w, p.h)
        self._canvas.fill(0)
        self._canvas[p.y : p.y + p.h, p.x : p.x + p.w] = resized
        cv2.cvtColor(self._canvas, cv2.COLOR_BGR2RGB, dst=self._rgb)
        self.model.fill_input(
            lambda a: cv2.addWeighted(self._rgb, 1 / 127.5, self._rgb, 0.0, -1.0, dst=a[0], dtype=cv2.CV_32F)
        )
        return p

    def detect(self, pixels: Pixels) -> list[Detection]:
        """Faces in a BGR frame, best first. Scratch buffers still hold pixels until ``clear``."""
        placement = self._letterbox(pixels)
        outputs = self.model.run_in_place()
        regressors = next(o for o in outputs if o.shape[-1] == 16)
        scores = next(o for o in outputs if o.shape[-1] == 1)
        raw = decode(
            regressors, scores, self.anchors,
            scale=self.size, min_score=self.min_score, score_clip=self.spec.score_clip,
        )
        kept = weighted_nms(raw, self.spec.nms_threshold, self.max_faces)
        return [
            _detection(placement, kept.boxes[i], kept.keypoints[i], float(kept.scores[i]))
            for i in range(len(kept))
        ]

    def scratch(self) -> list[npt.NDArray[np.generic]]:
        return [self._canvas, self._rgb, *self._resized.values()]

    def clear(self) -> None:
        """Zero every buffer that held pixels, including the interpreter's input tensor."""
        for buf in self.scratch():
            buf.fill(0)
        self.model.zero_input()


def _detection(p: Placement, box: F32, keypoints: F32, score: float) -> Detection:
    corners = np.clip(p.to_frame(box.reshape(2, 2)), 0.0, 1.0)
    kps = p.to_frame(keypoints)
    (x0, y0), (x1, y1) = corners.tolist()
    return Detection(
        box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
        score=round(score, 4),
        keypoints=tuple((float(x), float(y)) for x, y in kps.tolist()),
    )
