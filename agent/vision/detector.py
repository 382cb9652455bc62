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
        self._tensor = np.zeros((1, self.size, self.size, 3), np.float32)
        self._resized: dict[tuple[int, int], Pixels] = {}

    def _letterbox(self, pixels: Pixels) -> Placement:
        p = Placement.fit(pixels.shape[1], pixels.shape[0], self.size)
        buf = self._resized.get((p.w, p.h))
        if buf is None:
            buf = self._resized.setdefault((p.w, p.h), np.zeros((p.h, p.w, 3), np.uint8))
        shrink = p.w < pixels.shape[1]
        cv2.resize(pixels, (p.w, p.h), dst=buf, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        self._canvas.fill(0)
        self._canvas[p.y : p.y + p.h, p.x : p.x + p.w] = buf
        # BGR -> RGB and [0, 255] -> [-1, 1] in one pass into the preallocated tensor
        np.multiply(self._canvas[..., ::-1], np.float32(1 / 127.5), out=self._tensor[0], casting="unsafe")
        self._tensor -= np.float32(1.0)
        return p

    def detect(self, pixels: Pixels) -> list[Detection]:
        """Faces in a BGR frame, best first. Scratch buffers still hold pixels until ``clear``."""
        placement = self._letterbox(pixels)
        outputs = self.model.run(self._tensor)
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
        return [self._canvas, self._tensor, *self._resized.values()]

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
