"""BlazeFace decoding, pure numpy: anchors, score sigmoid, box and keypoint decode, weighted NMS.

A port of MediaPipe's ``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator`` and
``NonMaxSuppressionCalculator`` (WEIGHTED, IoU) as configured by
``modules/face_detection/face_detection_{short,full}_range_common.pbtxt``; the options live in
``models/manifest.json``. Coordinates here are normalised to the (square) model input; mapping
back through the letterbox is ``agent.vision.placement.Placement.to_frame``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.vision.manifest import AnchorSpec

F32 = npt.NDArray[np.float32]
NUM_KEYPOINTS = 6
Row = list[float]
"""One candidate as plain floats: xmin, ymin, xmax, ymax, then 6 keypoints (x, y)."""


def generate_anchors(spec: AnchorSpec) -> F32:
    """Anchor centres (N, 2) as x, y in 0..1; fixed anchor size, so width = height = 1."""
    centres: list[F32] = []
    layer = 0
    strides = spec.strides
    while layer < len(strides):
        last = layer
        per_cell = 0
        while last < len(strides) and strides[last] == strides[layer]:
            # one anchor for aspect ratio 1.0, plus the interpolated-scale anchor if enabled
            per_cell += 2 if spec.interpolated_scale_aspect_ratio > 0 else 1
            last += 1
        cells = int(np.ceil(spec.input_size / strides[layer]))
        grid = (np.arange(cells, dtype=np.float32) + spec.anchor_offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(xy, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    if anchors.shape[0] != spec.num_anchors:
        raise ValueError(
            f"anchor spec gives {anchors.shape[0]} anchors, the manifest says {spec.num_anchors}"
        )
    return anchors


@dataclass(frozen=True)
class RawDetections:
    """Decoded candidates in model-input coordinates: boxes (N, 4) xmin, ymin, xmax, ymax,
    keypoints (N, 6, 2), scores (N,)."""

    boxes: F32
    keypoints: F32
    scores: F32

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def empty() -> RawDetections:
    return RawDetections(
        np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros(0, np.float32)
    )


MAX_CANDIDATES = 256
"""Most candidates decoded per frame (best scores first); a real frame has a few dozen."""


def logit_threshold(min_score: float) -> np.float32:
    """The raw logit at which the sigmoid score reaches ``min_score``."""
    return np.float32(math.log(min_score / (1.0 - min_score)))


def raw_threshold(
    threshold: np.float32, levels: npt.NDArray[np.integer], real: Callable[[npt.NDArray[np.generic]], F32]
) -> int:
    """The least integer level (of ``levels``, ascending: every value of an int8 output) whose
    real value (``real``, rising with the level) reaches ``threshold``, or one past the last when
    none does: comparing raw outputs with it keeps exactly the anchors that comparing their
    dequantized values with ``threshold`` keeps, without dequantizing every anchor first."""
    passing = (real(levels) >= threshold).nonzero()[0]
    return int(levels[passing[0]]) if passing.size else int(levels[-1]) + 1


def decode_rows(
    regressors: F32, classificators: F32, anchors: F32, *, scale: float, min_score: float, score_clip: float
) -> tuple[list[Row], list[float]]:
    """Candidates whose sigmoid score reaches ``min_score``, as plain-float rows (xmin, ymin,
    xmax, ymax, 6 x keypoint x, y in input coordinates 0..1) and their scores."""
    return decode_candidates(
        regressors, classificators, anchors.tolist(),
        threshold=logit_threshold(min_score), inv_scale=1.0 / scale, score_clip=score_clip,
    )


def decode_candidates(
    regressors: npt.NDArray[np.generic],
    classificators: F32,
    anchors: list[list[float]],
    *,
    threshold: np.float32 | int,
    inv_scale: float,
    score_clip: float,
    real: Callable[[npt.NDArray[np.generic]], F32] | None = None,
    real_scores: Callable[[npt.NDArray[np.generic]], F32] | None = None,
) -> tuple[list[Row], list[float]]:
    """``decode_rows`` with its per-model constants worked out once (``FaceDetector`` keeps them).

    Only the threshold runs over every anchor (numpy, on the raw logits: sigmoid(x) >= t
    <=> x >= logit(t), so no exp); the few survivors are decoded in plain Python, where numpy
    calls on tiny arrays would cost more than the arithmetic. Right after an invoke every call
    runs with cold caches, so the fewer calls the better (docs/vision.md). ``real``: the
    regressors are an int8 model's raw output and this turns the kept rows into their float
    values (elementwise, so the same floats as dequantizing all of them first). ``real_scores``
    does the same for raw score logits, ``threshold`` then being in raw units
    (``raw_threshold``): only the kept ones are dequantized."""
    logits = classificators.reshape(-1)
    keep = (logits >= threshold).nonzero()[0]  # flatnonzero's own three calls, as one
    if keep.size == 0:
        return [], []
    values = logits[keep] if real_scores is None else real_scores(logits[keep])
    if keep.size > MAX_CANDIDATES:
        top = np.argsort(-values)[:MAX_CANDIDATES]
        keep, values = keep[top], values[top]
    kept = regressors.reshape(-1, 16)[keep]
    if real is not None:
        kept = real(kept)
    inv = inv_scale
    rows: list[Row] = []
    scores: list[float] = []
    for i, reg, logit in zip(keep.tolist(), kept.tolist(), values.tolist(), strict=True):
        half_w, half_h = reg[2] * inv / 2.0, reg[3] * inv / 2.0
        if half_w <= 0.0 or half_h <= 0.0:
            continue
        ax, ay = anchors[i]
        cx, cy = reg[0] * inv + ax, reg[1] * inv + ay
        rows.append([
            cx - half_w, cy - half_h, cx + half_w, cy + half_h,
            reg[4] * inv + ax, reg[5] * inv + ay, reg[6] * inv + ax, reg[7] * inv + ay,
            reg[8] * inv + ax, reg[9] * inv + ay, reg[10] * inv + ax, reg[11] * inv + ay,
            reg[12] * inv + ax, reg[13] * inv + ay, reg[14] * inv + ax, reg[15] * inv + ay,
        ])
        scores.append(1.0 / (1.0 + math.exp(-min(max(logit, -score_clip), score_clip))))
    return rows, scores


def to_arrays(rows: list[Row], scores: list[float]) -> RawDetections:
    if not rows:
        return empty()
    a = np.array(rows, np.float32)
    return RawDetections(a[:, :4], a[:, 4:].reshape(-1, NUM_KEYPOINTS, 2), np.array(scores, np.float32))


def decode(
    regressors: F32, classificators: F32, anchors: F32, *, scale: float, min_score: float, score_clip: float
) -> RawDetections:
    """``decode_rows`` as arrays."""
    return to_arrays(*decode_rows(
        regressors, classificators, anchors, scale=scale, min_score=min_score, score_clip=score_clip
    ))


def iou(a: Row, b: Row) -> float:
    """Intersection over union of two boxes (xmin, ymin, xmax, ymax, ...)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms_rows(
    rows: list[Row], scores: list[float], threshold: float, max_out: int
) -> list[tuple[Row, float]]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of its overlapping
    candidates (box and keypoints), with the best candidate's score. Plain Python: there are
    only a few dozen candidates, where per-call numpy overhead would dominate."""
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    out: list[tuple[Row, float]] = []
    while order and len(out) < max_out:
        top, rest = rows[order[0]], order[1:]
        overlaps = [iou(top, rows[i]) for i in rest]
        # The best candidate leads its own group even when it overlaps nothing, itself included
        # (a box of no area): the group is never empty.
        members = [order[0], *[i for i, o in zip(rest, overlaps, strict=True) if o > threshold]]
        order = [i for i, o in zip(rest, overlaps, strict=True) if o <= threshold]
        total = sum(scores[i] for i in members)
        acc: list[float] = [0] * len(top)  # an int start, as sum() has: the same floats
        for i in members:
            s = scores[i]
            acc = [a + s * v for a, v in zip(acc, rows[i], strict=True)]
        out.append(([a / total for a in acc], scores[members[0]]))
    return out


def weighted_nms(raw: RawDetections, threshold: float, max_out: int) -> RawDetections:
    """``weighted_nms_rows`` over arrays."""
    if len(raw) == 0:
        return raw
    rows = np.concatenate([raw.boxes, raw.keypoints.reshape(-1, 2 * NUM_KEYPOINTS)], axis=1).tolist()
    kept = weighted_nms_rows(rows, raw.scores.tolist(), threshold, max_out)
    return to_arrays([r for r, _ in kept], [s for _, s in kept])
