"""The face detector: letterbox a BGR frame into BlazeFace's square input, run it, decode.

All pixel copies live in preallocated scratch buffers that ``clear`` zeroes; the detector keeps
no other array between calls except its read-only anchors.
"""

from __future__ import annotations

from functools import cached_property, partial
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.frame import Pixels
from agent.vision.blazeface import (
    Row,
    decode_candidates,
    generate_anchors,
    logit_threshold,
    raw_threshold,
    weighted_nms_rows,
)
from agent.vision.manifest import ModelSpec
from agent.vision.observation import Detection
from agent.vision.placement import Placement
from agent.vision.runtime import Model, QuantParams, dequantize
from agent.vision.shrink import shared


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
        self._anchor_list: list[list[float]] = anchors.tolist()
        self._threshold = logit_threshold(self.min_score)
        self._canvas = np.zeros((self.size, self.size, 3), np.uint8)
        self._rgb = np.zeros((self.size, self.size, 3), np.uint8)
        self._shrinker = shared(self.size)

    def placement(self, frame_w: int, frame_h: int) -> Placement:
        """Where a W x H frame goes in the input; ``(w, h)`` is the size a camera's own scaler
        should deliver (``Frame.lores``) for the detector to skip its resize."""
        return self._shrinker.placement(frame_w, frame_h)

    def reads(self, lores: Pixels | None, pixels: Pixels) -> bool:
        """Would ``detect`` read ``lores`` (it has the placement's size) instead of ``pixels``?"""
        placement = self.placement(pixels.shape[1], pixels.shape[0])
        return lores is not None and lores.shape == placement.scaled_shape

    def _fill_scaled(self, rgb: Pixels, p: Placement) -> None:
        """The input from an RGB image the camera already scaled to the placement's size."""
        if p.w == self.size:
            self.model.fill_unit_rows(rgb, p.y)
            return
        try:
            self._canvas[p.y : p.y + p.h, p.x : p.x + p.w] = rgb
            self.model.fill_unit_rows(self._canvas)
        finally:
            self._canvas.fill(0)

    def _letterbox(self, pixels: Pixels) -> Placement:
        """Resize, pad with black, BGR -> RGB and [0, 255] -> [-1, 1] into the model's input.

        Every scratch image is zeroed before returning, while it is still in the CPU cache
        (zeroing it after the invoke, which evicts it, costs several times more); only the
        input tensor holds pixels until ``clear``."""
        p = self._shrinker.placement(pixels.shape[1], pixels.shape[0])
        rgb = self._rgb[: p.h] if p.w == self.size else self._rgb[: p.h, : p.w]
        try:
            self._shrinker.shrink(pixels, rgb)
            self._fill_scaled(rgb, p)
            return p
        finally:
            rgb.fill(0)

    def detect(self, pixels: Pixels, lores: Pixels | None = None) -> list[Detection]:
        """Faces in a BGR frame (a grey one only with ``lores``), best first. Scratch buffers
        still hold pixels until ``clear``.
        ``lores``: the same frame scaled by the camera, RGB; used instead of resizing ``pixels``
        when it has exactly the placement's size (else ignored: a camera reopened for another
        detector size delivers the old size until then)."""
        placement = self.placement(pixels.shape[1], pixels.shape[0])
        if lores is not None and lores.shape == placement.scaled_shape:  # as ``reads``
            self._fill_scaled(lores, placement)
        else:
            placement = self._letterbox(pixels)
        rows, row_scores = self.model.invoke_and_read(self._decode)
        kept = weighted_nms_rows(rows, row_scores, self.spec.nms_threshold, self.max_faces)
        return [_detection(placement, row, score) for row, score in kept]

    def _decode(self, outputs: list[npt.NDArray[Any]]) -> tuple[list[Row], list[float]]:
        """Decode straight from the interpreter's output tensors (plain floats come out). An
        int8 model's scores (one per anchor) are dequantized whole, its regressors (16 per
        anchor) only in the rows that pass the threshold."""
        (ri, reg_q), (si, score_q) = self._outputs
        return decode_candidates(
            outputs[ri], outputs[si], self._anchor_list,
            threshold=self._raw_threshold, inv_scale=1.0 / self.size, score_clip=self.spec.score_clip,
            real=None if reg_q is None else partial(dequantize, params=reg_q),
            real_scores=None if score_q is None else partial(dequantize, params=score_q),
        )

    @cached_property
    def _raw_threshold(self) -> np.float32 | int:
        """``_threshold`` in the units of the raw score output: the logit itself for a float
        one, the least integer level that reaches it for an int8 one (``raw_threshold``)."""
        (_, score_q) = self._outputs[1]
        if score_q is None:
            return self._threshold
        lo, hi = score_q.bounds
        levels = np.arange(lo, hi + 1).astype(score_q.dtype)
        return raw_threshold(self._threshold, levels, partial(dequantize, params=score_q))

    @cached_property
    def _outputs(self) -> tuple[tuple[int, QuantParams | None], tuple[int, QuantParams | None]]:
        """(index, quantization) of the regressor output and of the score output."""
        shapes = self.model.output_shapes
        quant = self.model.output_quantization
        reg = next(i for i, s in enumerate(shapes) if s[-1] == 16)
        score = next(i for i, s in enumerate(shapes) if s[-1] == 1)
        return (reg, quant[reg]), (score, quant[score])

    def scratch(self) -> list[npt.NDArray[np.generic]]:
        return [self._canvas, self._rgb, *self._shrinker.scratch()]

    def clear(self) -> None:
        """Zero the interpreter's input tensor: the only buffer still holding pixels after ``detect``."""
        self.model.zero_input()


def _detection(p: Placement, row: list[float], score: float) -> Detection:
    """Map one kept candidate (input coordinates) back to the frame, as plain floats."""
    s = float(p.size)
    xs = [(v * s - p.x) / p.w for v in row[0::2]]
    ys = [(v * s - p.y) / p.h for v in row[1::2]]
    x0, x1 = min(max(xs[0], 0.0), 1.0), min(max(xs[1], 0.0), 1.0)
    y0, y1 = min(max(ys[0], 0.0), 1.0), min(max(ys[1], 0.0), 1.0)
    return Detection(
        box=(x0, y0, x1 - x0, y1 - y0),
        score=round(score, 4),
        keypoints=tuple(zip(xs[2:], ys[2:], strict=True)),
    )
