"""The emotion classifier: an eye-levelled grey crop of each face, then FER's 7-class model.

The crop is square around the detector's box with a margin, rotated so the eyes are level,
64 x 64 grey, scaled to [-1, 1] as the model was trained. A large face is first warped to a
power-of-two multiple of 64 and then halved down (2 x 2 means), so the small crop is not aliased.
Every buffer that holds face pixels is preallocated scratch that ``clear`` zeroes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import Pixels, is_grey
from agent.vision.manifest import ModelSpec
from agent.vision.observation import Detection
from agent.vision.quality import DENOISE_SIGMA
from agent.vision.runtime import Model

CROP = 64
MAX_OVERSAMPLE = 4


def rotation_matrix(cx: float, cy: float, angle: float, scale: float) -> list[list[float]]:
    """``cv2.getRotationMatrix2D((cx, cy), angle, scale)`` as nested lists, float for float the
    same (the centre goes through float32 as in OpenCV's ``Point2f``; a test compares), without
    a call into OpenCV, which costs more than the arithmetic right after an invoke."""
    a = angle * (math.pi / 180)
    alpha, beta = math.cos(a) * scale, math.sin(a) * scale
    x, y = float(np.float32(cx)), float(np.float32(cy))
    return [[alpha, beta, (1 - alpha) * x - beta * y], [-beta, alpha, beta * x + (1 - alpha) * y]]


def sampled_region(
    centre: tuple[float, float], side: float, angle: float, frame: tuple[int, int]
) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1: the part of a W x H ``frame`` that a crop of ``side`` pixels centred on
    ``centre`` and turned by ``angle`` degrees reads, with a pixel more for the bilinear
    neighbours, clipped to the frame (outside it the warp reads only its black border)."""
    (cx, cy), (w, h) = centre, frame
    a = math.radians(angle)
    half = side / 2 * (abs(math.cos(a)) + abs(math.sin(a))) + 2.0
    x0, x1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half) + 1, w)
    y0, y1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half) + 1, h)
    return x0, y0, max(x1, x0), max(y1, y0)


def _cut(region: tuple[int, int, int, int], centre: tuple[float, float], side: float, angle: float) -> bool:
    """Whether the crop reads beyond the frame (its sampled region was clipped)."""
    (cx, cy), a = centre, math.radians(angle)
    half = side / 2 * (abs(math.cos(a)) + abs(math.sin(a)))
    x0, y0, x1, y1 = region
    return cx - half < x0 or cy - half < y0 or cx + half > x1 - 1 or cy + half > y1 - 1


class EmotionClassifier:
    """Align, crop and classify one face at a time; probabilities follow the manifest's labels."""

    def __init__(self, model: Model, spec: ModelSpec, margin: float = 0.15) -> None:
        if not spec.labels:
            raise ValueError(f"{spec.name} has no labels in the manifest")
        self.model = model
        self.spec = spec
        self.labels = spec.labels
        self.margin = margin
        self._work = {k: np.zeros((CROP * k, CROP * k), np.uint8) for k in (2, 4)}
        """Oversampled grey crops (k x 64), halved down to ``_grey``."""
        self._colour = np.zeros((CROP, CROP, 3), np.uint8)
        self._regions = np.zeros(0, np.uint8)
        """The grey copy of the frame region a warp samples (grown on demand)."""
        self._grey = np.zeros((CROP, CROP), np.uint8)
        self._lap = np.zeros((CROP, CROP), np.float32)
        self._gauss = cv2.getGaussianKernel(5, DENOISE_SIGMA, cv2.CV_32F)
        self._gauss.flags.writeable = False  # a constant: never pixels
        self._smooth = np.zeros((CROP, CROP), np.float32)
        self._norm = np.zeros((CROP, CROP), np.uint8)
        self._dirty: list[npt.NDArray[np.generic]] = []
        self.cut_by_edge = False
        """The last ``align`` read beyond the frame (the face is cut by its edge)."""

    def align(
        self,
        pixels: Pixels,
        det: Detection,
        border: int = cv2.BORDER_CONSTANT,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """The eye-levelled 64 x 64 grey crop of ``det``: written into ``out`` (the caller's to
        zero), else into a scratch buffer that ``clear`` zeroes. Every buffer on the way is
        zeroed before returning, while still in the CPU cache. ``border``: what the warp reads
        beyond the frame (black for the classifier; replicated edge pixels to measure a face the
        frame cuts, see ``cut_by_edge``)."""
        h, w = pixels.shape[:2]
        bx, by, bw, bh = det.box
        cx, cy = (bx + bw / 2) * w, (by + bh / 2) * h
        side = max(bw * w, bh * h, 1.0) * (1.0 + 2.0 * self.margin)  # a box of no area: 1 px
        (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
        angle = math.degrees(math.atan2((ly - ry) * h, (lx - rx) * w))
        k = 1
        while k < MAX_OVERSAMPLE and side >= CROP * k * 2:
            k *= 2
        size = CROP * k
        m = rotation_matrix(cx, cy, angle, size / side)
        m[0][2] += size / 2 - cx
        m[1][2] += size / 2 - cy
        if out is None:
            out = self._grey
            self._dirty.append(out)
        region = sampled_region((cx, cy), side, angle, (w, h))
        self.cut_by_edge = _cut(region, (cx, cy), side, angle)
        if k == 1 and is_grey(pixels):
            cv2.warpAffine(
                pixels, np.array(m), (CROP, CROP), dst=out, flags=cv2.INTER_LINEAR,
                borderMode=border, borderValue=0,
            )
        elif k == 1:
            self._warp_colour(pixels, m, border, out)
        else:
            self._warp_grey(pixels, (m, k), region, border, out)
        return out

    def _warp_colour(
        self, pixels: Pixels, m: list[list[float]], border: int, grey: npt.NDArray[np.uint8]
    ) -> None:
        """A small face: the colour warp straight to 64 x 64, then grey."""
        try:
            cv2.warpAffine(
                pixels, np.array(m), (CROP, CROP), dst=self._colour, flags=cv2.INTER_LINEAR,
                borderMode=border, borderValue=(0, 0, 0),
            )
            cv2.cvtColor(self._colour, cv2.COLOR_BGR2GRAY, dst=grey)
        finally:
            self._colour.fill(0)

    def _warp_grey(
        self,
        pixels: Pixels,
        warp: tuple[list[list[float]], int],
        box: tuple[int, int, int, int],
        border: int,
        grey: npt.NDArray[np.uint8],
    ) -> None:
        """A large face (k = 2 or 4): only the frame region the warp reads turned grey, warped
        at k x 64 on one channel and halved down to 64. A third of the work of warping colour
        (a 1080p face warped to 256: 290 us in colour, 100 us so); grey before or after the
        linear warp differs only in rounding (at most 3 grey levels, tests/vision/test_glue.py)."""
        (m, k), (x0, y0, x1, y1) = warp, box
        m[0][2] += m[0][0] * x0 + m[0][1] * y0  # the warp reads the region, not the frame
        m[1][2] += m[1][0] * x0 + m[1][1] * y0
        region = pixels[y0:y1, x0:x1] if is_grey(pixels) else self._region(x1 - x0, y1 - y0)
        used = [buf for j, buf in self._work.items() if j <= k]
        out = self._work[k]
        try:
            if not region.size:  # a degenerate box: nothing of the frame to read
                grey.fill(0)
                return
            if not is_grey(pixels):  # a grey frame is read where it is (its lease zeroes it)
                cv2.cvtColor(pixels[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY, dst=region)
            cv2.warpAffine(
                region, np.array(m), (CROP * k, CROP * k), dst=out, flags=cv2.INTER_LINEAR,
                borderMode=border, borderValue=0,
            )
            while k > 1:  # each halving is an exact 2 x 2 mean (OpenCV's fast path)
                k //= 2
                smaller = self._work.get(k, grey)
                cv2.resize(out, (CROP * k, CROP * k), dst=smaller, interpolation=cv2.INTER_LINEAR)
                out = smaller
        finally:
            if not is_grey(pixels):
                region.fill(0)
            for buf in used:
                buf.fill(0)

    def _region(self, w: int, h: int) -> npt.NDArray[np.uint8]:
        """A w x h grey scratch image (a view of one buffer that grows to the largest region)."""
        if self._regions.size < w * h:
            self._regions = np.zeros(w * h, np.uint8)
        return self._regions[: w * h].reshape(h, w)

    def measure(self, grey: npt.NDArray[np.uint8]) -> tuple[float, float]:
        """(sharpness, brightness) of a crop: ``quality.sharpness_index`` (edge detail of the
        smoothed crop relative to its contrast) and its mean grey level, with OpenCV (a test
        checks they equal the numpy reference). The smoothed crop and the Laplacian, which still
        show the face's edges, are zeroed before returning."""
        try:
            cv2.sepFilter2D(  # GaussianBlur's kernel, from the 8-bit crop: no float copy to make
                grey, cv2.CV_32F, self._gauss, self._gauss, dst=self._smooth,
                borderType=cv2.BORDER_REFLECT_101,
            )
            cv2.Laplacian(self._smooth, cv2.CV_32F, dst=self._lap, ksize=1)
            _, lap_std = cv2.meanStdDev(self._lap[1:-1, 1:-1])
            _, smooth_std = cv2.meanStdDev(self._smooth)
        finally:
            self._lap.fill(0)
            self._smooth.fill(0)
        sharpness = 100.0 * float(lap_std[0, 0]) ** 2 / max(float(smooth_std[0, 0]) ** 2, 1.0)
        return sharpness, float(cv2.mean(grey)[0])

    def normalise(
        self, grey: npt.NDArray[np.uint8], brightness: float, below: float
    ) -> npt.NDArray[np.uint8]:
        """A dark crop (mean grey under ``below``) blended half and half with its histogram-
        equalised self, so the classifier sees the face's shape instead of near-black; other
        crops unchanged. In the robustness report it turned 0 of 6 correct readings at light
        x0.1 into 4 of 6, and it cannot touch a well-lit face (docs/vision.md)."""
        if brightness >= below:
            return grey
        self._dirty.append(self._norm)
        cv2.equalizeHist(grey, dst=self._norm)
        cv2.addWeighted(grey, 0.5, self._norm, 0.5, 0.0, dst=self._norm)
        return self._norm

    def classify(self, grey: npt.NDArray[np.uint8]) -> tuple[tuple[str, float], ...]:
        """(label, probability) over the manifest's labels, summing to 1."""
        self.model.fill_unit_rows(grey.reshape(CROP, CROP, 1))
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
        return [*self._work.values(), self._colour, self._regions, self._grey, self._lap,
                self._smooth, self._norm]

    def clear(self) -> None:
        """Zero the crops written since the last call, and the model's input tensor."""
        for buf in self._dirty:
            buf.fill(0)
        self._dirty.clear()
        self.model.zero_input()
