"""The emotion classifier: an eye-levelled grey crop of each face, then FER's 7-class model.

The crop is square around the detector's box with a margin, rotated so the eyes are level,
64 x 64 grey, scaled to [-1, 1] as the model was trained. A large face is first warped to a
power-of-two multiple of 64 and then area-averaged down, so the small crop is not aliased.
Every buffer that holds face pixels is preallocated scratch that ``clear`` zeroes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import Pixels
from agent.vision.manifest import ModelSpec
from agent.vision.observation import Detection
from agent.vision.runtime import Model

CROP = 64
MAX_OVERSAMPLE = 4


class EmotionClassifier:
    """Align, crop and classify one face at a time; probabilities follow the manifest's labels."""

    def __init__(self, model: Model, spec: ModelSpec, margin: float = 0.15) -> None:
        if not spec.labels:
            raise ValueError(f"{spec.name} has no labels in the manifest")
        self.model = model
        self.spec = spec
        self.labels = spec.labels
        self.margin = margin
        self._work = {k: np.zeros((CROP * k, CROP * k, 3), np.uint8) for k in (1, 2, 4)}
        self._small = np.zeros((CROP, CROP, 3), np.uint8)
        self._grey = np.zeros((CROP, CROP), np.uint8)
        self._lap = np.zeros((CROP, CROP), np.float32)
        self._dirty: list[npt.NDArray[np.generic]] = []

    def align(self, pixels: Pixels, det: Detection) -> npt.NDArray[np.uint8]:
        """The eye-levelled 64 x 64 grey crop of ``det`` (a scratch buffer, zeroed by ``clear``)."""
        h, w = pixels.shape[:2]
        bx, by, bw, bh = det.box
        cx, cy = (bx + bw / 2) * w, (by + bh / 2) * h
        side = max(bw * w, bh * h) * (1.0 + 2.0 * self.margin)
        (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
        angle = math.degrees(math.atan2((ly - ry) * h, (lx - rx) * w))
        k = 1
        while k < MAX_OVERSAMPLE and side >= CROP * k * 2:
            k *= 2
        out = self._work[k]
        self._dirty += [out, self._grey]
        size = CROP * k
        m = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
        m[0, 2] += size / 2 - cx
        m[1, 2] += size / 2 - cy
        cv2.warpAffine(
            pixels, m, (size, size), dst=out, flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
        )
        if k > 1:
            self._dirty.append(self._small)
            cv2.resize(out, (CROP, CROP), dst=self._small, interpolation=cv2.INTER_AREA)
            out = self._small
        cv2.cvtColor(out, cv2.COLOR_BGR2GRAY, dst=self._grey)
        return self._grey

    def measure(self, grey: npt.NDArray[np.uint8]) -> tuple[float, float]:
        """(sharpness, brightness) of a crop: the variance of its 4-neighbour Laplacian over the
        interior and its mean grey level. Same figures as ``quality.laplacian_variance`` and
        ``grey.mean()`` (a test checks), in three OpenCV calls instead of a dozen numpy ones.
        The Laplacian, which still shows the face's edges, goes to zeroed scratch."""
        self._dirty.append(self._lap)
        cv2.Laplacian(grey, cv2.CV_32F, dst=self._lap, ksize=1)
        _, std = cv2.meanStdDev(self._lap[1:-1, 1:-1])
        return float(std[0, 0]) ** 2, float(cv2.mean(grey)[0])

    def classify(self, grey: npt.NDArray[np.uint8]) -> tuple[tuple[str, float], ...]:
        """(label, probability) over the manifest's labels, summing to 1."""
        self.model.fill_input(
            lambda a: cv2.addWeighted(
                grey, 1 / 127.5, grey, 0.0, -1.0, dst=a.reshape(CROP, CROP), dtype=cv2.CV_32F
            )
        )
        (out,) = self.model.run_in_place()
        p: list[float] = out.reshape(-1).tolist()
        if len(p) != len(self.labels):
            raise ValueError(f"{self.spec.name} gave {len(p)} outputs for {len(self.labels)} labels")
        if not self.spec.softmax_output:  # logits: normalise here
            top = max(p)
            e = [math.exp(v - top) for v in p]
            p = [v / sum(e) for v in e]
        return tuple((label, round(v, 4)) for label, v in zip(self.labels, p, strict=True))

    def scratch(self) -> list[npt.NDArray[np.generic]]:
        return [*self._work.values(), self._small, self._grey, self._lap]

    def clear(self) -> None:
        """Zero the crops written since the last call, and the model's input tensor."""
        for buf in self._dirty:
            buf.fill(0)
        self._dirty.clear()
        self.model.zero_input()
