"""BlazeFace decoding, pure numpy: anchors, score sigmoid, box and keypoint decode, weighted NMS.

A port of MediaPipe's ``SsdAnchorsCalculator``, ``TensorsToDetectionsCalculator`` and
``NonMaxSuppressionCalculator`` (WEIGHTED, IoU) as configured by
``modules/face_detection/face_detection_{short,full}_range_common.pbtxt``; the options live in
``models/manifest.json``. Coordinates here are normalised to the (square) model input; mapping
back through the letterbox is ``agent.vision.detector.Placement.to_frame``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.vision.manifest import AnchorSpec

F32 = npt.NDArray[np.float32]
NUM_KEYPOINTS = 6


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


def decode(
    regressors: F32, classificators: F32, anchors: F32, *, scale: float, min_score: float, score_clip: float
) -> RawDetections:
    """Keep anchors whose sigmoid score reaches ``min_score`` and decode only those."""
    logits = classificators.reshape(-1)
    # sigmoid(x) >= t  <=>  x >= logit(t): threshold on the raw logits, before any exp
    keep = np.flatnonzero(logits >= np.float32(np.log(min_score / (1.0 - min_score))))
    if keep.size == 0:
        return empty()
    kept = np.clip(logits[keep], -score_clip, score_clip)
    scores = (1.0 / (1.0 + np.exp(-kept))).astype(np.float32)
    raw = regressors.reshape(-1, 2 + NUM_KEYPOINTS, 2)[keep] / np.float32(scale)
    raw[:, 2:, :] += anchors[keep][:, None, :]
    raw[:, 0, :] += anchors[keep]
    half = raw[:, 1, :] / 2.0
    boxes = np.concatenate([raw[:, 0, :] - half, raw[:, 0, :] + half], axis=1)
    valid = np.all(half > 0, axis=1)
    return RawDetections(boxes[valid], raw[valid, 2:, :], scores[valid])


def iou(box: F32, boxes: F32) -> F32:
    """Intersection over union of one box with each of ``boxes`` (xmin, ymin, xmax, ymax)."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    out: F32 = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)
    return out


def weighted_nms(raw: RawDetections, threshold: float, max_out: int) -> RawDetections:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of its overlapping
    candidates (box and keypoints), with the best candidate's score."""
    if len(raw) == 0:
        return raw
    order = np.argsort(-raw.scores, kind="stable")
    boxes, kps, scores = raw.boxes[order], raw.keypoints[order], raw.scores[order]
    remaining = np.arange(len(scores))
    out_b: list[F32] = []
    out_k: list[F32] = []
    out_s: list[float] = []
    while remaining.size and len(out_s) < max_out:
        top = remaining[0]
        overlap = iou(boxes[top], boxes[remaining]) > threshold
        members = remaining[overlap]
        w = scores[members][:, None]
        total = float(w.sum())
        out_b.append((boxes[members] * w).sum(axis=0) / total)
        out_k.append((kps[members] * w[:, :, None]).sum(axis=0) / total)
        out_s.append(float(scores[top]))
        remaining = remaining[~overlap]
    if not out_s:
        return empty()
    return RawDetections(
        np.stack(out_b).astype(np.float32), np.stack(out_k).astype(np.float32), np.array(out_s, np.float32)
    )
