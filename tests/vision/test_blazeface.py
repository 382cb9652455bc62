"""BlazeFace decoding as pure numpy: anchors, sigmoid threshold, box/keypoint decode, weighted NMS."""

from __future__ import annotations

import numpy as np
import pytest

from agent.vision.blazeface import (
    MAX_CANDIDATES,
    RawDetections,
    decode,
    generate_anchors,
    iou,
    weighted_nms,
)
from agent.vision.manifest import default_models_dir, model_spec
from agent.vision.placement import Placement
from tests.purity import import_blocked

MODELS = default_models_dir()


def anchors_of(name: str) -> np.ndarray:
    spec = model_spec(MODELS, name, verify=False)
    assert spec.anchors is not None
    return generate_anchors(spec.anchors)


def test_short_range_has_896_anchors_on_16x16_and_8x8_grids() -> None:
    a = anchors_of("face_detection_short_range")
    assert a.shape == (896, 2)
    # stride 8: 16 x 16 cells, 2 anchors each, centred at (i + 0.5) / 16
    assert a[0] == pytest.approx([0.5 / 16, 0.5 / 16])
    assert a[1] == pytest.approx(a[0])
    assert a[2] == pytest.approx([1.5 / 16, 0.5 / 16])
    # strides 16, 16, 16 share one 8 x 8 grid with 6 anchors per cell
    assert a[512] == pytest.approx([0.5 / 8, 0.5 / 8])
    assert a[517] == pytest.approx(a[512])
    assert a[518] == pytest.approx([1.5 / 8, 0.5 / 8])
    assert a[-1] == pytest.approx([7.5 / 8, 7.5 / 8])


def test_full_range_has_2304_anchors_one_per_cell_of_a_48x48_grid() -> None:
    a = anchors_of("face_detection_full_range")
    assert a.shape == (2304, 2)
    assert a[0] == pytest.approx([0.5 / 48, 0.5 / 48])
    assert a[1] == pytest.approx([1.5 / 48, 0.5 / 48])
    assert a[48] == pytest.approx([0.5 / 48, 1.5 / 48])


def one_candidate(n: int, index: int, logit: float, values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    regressors = np.zeros((1, n, 16), np.float32)
    regressors[0, index] = values
    scores = np.full((1, n, 1), -10.0, np.float32)
    scores[0, index, 0] = logit
    return regressors, scores


def test_decode_offsets_from_the_anchor_in_input_pixels() -> None:
    anchors = anchors_of("face_detection_full_range")
    # anchor 0 sits at (0.5/48, 0.5/48) = (2, 2) input pixels; move the centre by (+40, +20) px
    values = [40, 20, 48, 24, 30, 10, 50, 10, 40, 20, 40, 30, 20, 15, 60, 15]
    reg, sc = one_candidate(2304, 0, 2.0, values)
    raw = decode(reg, sc, anchors, scale=192.0, min_score=0.5, score_clip=100.0)
    assert len(raw) == 1
    assert raw.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    cx, cy = (2 + 40) / 192, (2 + 20) / 192
    assert raw.boxes[0] == pytest.approx([cx - 24 / 192, cy - 12 / 192, cx + 24 / 192, cy + 12 / 192])
    assert raw.keypoints[0, 0] == pytest.approx([(2 + 30) / 192, (2 + 10) / 192])
    assert raw.keypoints[0, 5] == pytest.approx([(2 + 60) / 192, (2 + 15) / 192])


def test_scores_below_the_threshold_and_empty_boxes_are_dropped() -> None:
    anchors = anchors_of("face_detection_short_range")
    reg, sc = one_candidate(896, 3, 0.0, [0, 0, 10, 10] + [0] * 12)  # sigmoid(0) = 0.5
    assert len(decode(reg, sc, anchors, scale=128.0, min_score=0.6, score_clip=100.0)) == 0
    assert len(decode(reg, sc, anchors, scale=128.0, min_score=0.5, score_clip=100.0)) == 1
    reg[0, 3, 2] = 0.0  # zero width
    assert len(decode(reg, sc, anchors, scale=128.0, min_score=0.5, score_clip=100.0)) == 0


def test_huge_logits_are_clipped_not_overflowed() -> None:
    anchors = anchors_of("face_detection_short_range")
    reg, sc = one_candidate(896, 0, 1e30, [0, 0, 10, 10] + [0] * 12)
    raw = decode(reg, sc, anchors, scale=128.0, min_score=0.5, score_clip=100.0)
    assert raw.scores.tolist() == [1.0]


def candidates(boxes: list[list[float]], scores: list[float]) -> RawDetections:
    b = np.array(boxes, np.float32)
    kps = np.repeat(b[:, None, :2], 6, axis=1)
    return RawDetections(b, kps, np.array(scores, np.float32))


def test_weighted_nms_blends_overlapping_boxes_by_score_and_keeps_the_best_score() -> None:
    raw = candidates([[0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 1.1, 1.1], [3.0, 3.0, 4.0, 4.0]], [0.6, 0.9, 0.7])
    out = weighted_nms(raw, threshold=0.3, max_out=10)
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])
    w = (0.9 * 0.1 + 0.6 * 0.0) / 1.5
    assert out.boxes[0] == pytest.approx([w, w, 1 + w, 1 + w])
    assert out.keypoints[0, 0] == pytest.approx([w, w])
    assert out.boxes[1].tolist() == [3.0, 3.0, 4.0, 4.0]


def test_weighted_nms_keeps_separate_faces_and_stops_at_max_out() -> None:
    boxes = [[float(i), 0.0, i + 0.9, 0.9] for i in range(5)]
    out = weighted_nms(candidates(boxes, [0.9, 0.8, 0.7, 0.6, 0.55]), threshold=0.3, max_out=3)
    assert len(out) == 3
    assert out.boxes[:, 0].tolist() == [0.0, 1.0, 2.0]


def test_a_candidate_box_of_no_area_is_kept_alone_not_a_crash() -> None:
    """It overlaps nothing, not even itself, so its group was empty: ZeroDivisionError (found
    by a hostile-input probe, through a manifest whose anchors sat outside the input)."""
    raw = candidates([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]], [0.9, 0.8])
    out = weighted_nms(raw, threshold=0.3, max_out=10)
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])
    assert out.boxes[0].tolist() == [0.5, 0.5, 0.5, 0.5]


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    box = [0.0, 0.0, 2.0, 2.0]
    assert iou(box, [0.0, 0.0, 2.0, 2.0]) == 1.0
    assert iou(box, [5.0, 5.0, 6.0, 6.0]) == 0.0
    assert iou(box, [1.0, 0.0, 3.0, 2.0]) == pytest.approx(1 / 3)


def test_more_candidates_than_the_cap_keep_the_best_scores() -> None:
    anchors = anchors_of("face_detection_full_range")
    reg = np.tile(np.array([0, 0, 10, 10] + [0] * 12, np.float32), (1, 2304, 1))
    logits = np.linspace(1.0, 5.0, 2304, dtype=np.float32).reshape(1, 2304, 1)
    raw = decode(reg, logits, anchors, scale=192.0, min_score=0.5, score_clip=100.0)
    assert len(raw) == MAX_CANDIDATES
    assert float(raw.scores.min()) > 1 / (1 + np.exp(-4.5))


@pytest.mark.parametrize(("w", "h"), [(640, 360), (360, 640), (1280, 886), (100, 100)])
def test_placement_round_trips_frame_coordinates(w: int, h: int) -> None:
    p = Placement.fit(w, h, 192)
    assert max(p.w, p.h) == 192
    assert 0 <= p.x <= 192 - p.w
    assert 0 <= p.y <= 192 - p.h
    frame_xy = np.array([[0.0, 0.0], [1.0, 1.0], [0.25, 0.75]], np.float32)
    input_xy = np.stack(
        [(frame_xy[:, 0] * p.w + p.x) / 192, (frame_xy[:, 1] * p.h + p.y) / 192], axis=1
    )
    assert p.to_frame(input_xy) == pytest.approx(frame_xy, abs=1e-6)


def test_decoding_and_quality_import_without_opencv_or_a_runtime() -> None:
    """Pure logic: blazeface, quality and the manifest load with cv2 and LiteRT blocked."""
    result = import_blocked(["agent.vision.blazeface", "agent.vision.quality", "agent.vision.manifest"])
    assert result.ok, result.stderr
