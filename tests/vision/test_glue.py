"""The pipeline's cheap glue gives the very numbers of the code it replaced (same floats)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.frame import Pixels
from agent.vision.blazeface import (
    Row,
    decode_candidates,
    iou,
    logit_threshold,
    raw_threshold,
    weighted_nms_rows,
)
from agent.vision.emotion import EmotionClassifier, rotation_matrix
from agent.vision.observation import Detection
from agent.vision.pipeline import VisionPipeline
from agent.vision.placement import Placement
from agent.vision.runtime import QuantParams, dequantize
from agent.vision.settings import VisionConfig
from agent.vision.shrink import Shrinker, shrink_steps
from tests.vision.conftest import read


def test_rotation_matrix_is_opencvs_float_for_float() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20_000):
        cx, cy = float(rng.uniform(0, 4000)), float(rng.uniform(0, 3000))
        angle = math.degrees(math.atan2(rng.uniform(-50, 50), rng.uniform(1, 300)))
        scale = 128 / float(rng.uniform(10, 2000))
        expected = cv2.getRotationMatrix2D((cx, cy), angle, scale).tolist()
        assert rotation_matrix(cx, cy, angle, scale) == expected


def reference_nms(
    rows: list[Row], scores: list[float], threshold: float, max_out: int
) -> list[tuple[Row, float]]:
    """The weighted NMS as first written: one sum() per coordinate."""
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    out: list[tuple[Row, float]] = []
    while order and len(out) < max_out:
        top = rows[order[0]]
        members = [i for i in order if iou(top, rows[i]) > threshold]
        order = [i for i in order if iou(top, rows[i]) <= threshold]
        total = sum(scores[i] for i in members)
        blended = [sum(scores[i] * rows[i][j] for i in members) / total for j in range(len(top))]
        out.append((blended, scores[members[0]]))
    return out


def test_weighted_nms_gives_the_reference_floats() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        xy = rng.uniform(0, 0.8, (n, 2))
        wh = rng.uniform(0.05, 0.3, (n, 2))
        rows = [[*p, *(p + s), *rng.uniform(0, 1, 12)] for p, s in zip(xy, wh, strict=True)]
        rows = [[float(v) for v in r] for r in rows]
        scores = [float(s) for s in rng.uniform(0.5, 1.0, n)]
        assert weighted_nms_rows(rows, scores, 0.3, 5) == reference_nms(rows, scores, 0.3, 5)


def test_resize_steps_halve_then_reach_twice_the_size_then_halve() -> None:
    assert shrink_steps(640, 360, 192, 108) == [(320, 180), (384, 216), (192, 108)]
    assert shrink_steps(1280, 720, 192, 108) == [(640, 360), (320, 180), (384, 216), (192, 108)]
    assert shrink_steps(384, 216, 192, 108) == [(192, 108)]
    assert shrink_steps(192, 108, 192, 108) == []
    assert shrink_steps(100, 50, 192, 96) == [(192, 96)]  # smaller than the input: one bilinear step


def whole_image_chain(pixels: Pixels, side: int) -> Pixels:
    """The resize chain as first written: every step on the whole image of the step before."""
    p = Placement.fit(pixels.shape[1], pixels.shape[0], side)
    resized = pixels
    for w, h in shrink_steps(pixels.shape[1], pixels.shape[0], p.w, p.h):
        resized = cv2.resize(resized, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), np.uint8)


def test_halvings_in_bands_give_the_bytes_of_whole_image_halvings(media: Path) -> None:
    """Frame sizes with 0 to 4 exact halvings, odd ones, a band that ends short; random pixels
    and a photo scaled to 1080p."""
    rng = np.random.default_rng(11)
    photo = cv2.resize(read(media, "group6.jpg"), (1920, 1080), interpolation=cv2.INTER_AREA)
    sizes = [(1920, 1080), (1280, 720), (3840, 2160), (2592, 1944), (4056, 3040), (1024, 768),
             (640, 360), (1921, 1081), (1922, 1082), (1000, 3000), (300, 200)]
    for side in (192, 128):
        shrinker = Shrinker(side)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes] + [photo]
        for frame in frames:
            p = shrinker.placement(frame.shape[1], frame.shape[0])
            out = np.zeros((p.h, p.w, 3), np.uint8)
            shrinker.shrink(frame, out)
            assert np.array_equal(out, whole_image_chain(frame, side)), (frame.shape, side)
        assert not any(buf.any() for buf in shrinker.scratch())  # no pixels left in the scratch


def test_a_1080p_frame_is_shrunk_without_the_larger_halvings_whole() -> None:
    """The 960 x 540 and 480 x 270 halvings (1.9 MB) exist only as bands: the scratch images
    of a 1080p frame take 0.7 MB, not 2.3 (docs/vision.md, "Peak RSS")."""
    shrinker = Shrinker(192)
    shrinker.shrink(np.zeros((1080, 1920, 3), np.uint8), np.zeros((108, 192, 3), np.uint8))
    sizes = {buf.shape for buf in shrinker.scratch()}
    assert (540, 960, 3) not in sizes
    assert (270, 480, 3) not in sizes
    assert sum(buf.nbytes for buf in shrinker.scratch()) < 800 * 1024


def test_int8_detector_decodes_its_raw_outputs_as_the_dequantized_ones(media: Path) -> None:
    """The int8 detector dequantizes only the regressor rows that pass the threshold; the
    boxes, keypoints and scores must be those of dequantizing every output first."""
    cfg = VisionConfig(detector="full_range", precision="int8")
    pipeline = VisionPipeline.from_config(cfg)
    det = pipeline.detector
    assert det.model.output_quantization != (None, None)  # an int8 file, read raw
    try:
        seen = 0
        for name in ("astronaut.png", "group6.jpg"):
            image = read(media, name)
            for scale in (1.0, 0.5, 0.3):
                frame = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                det._letterbox(frame)
                fast = det.model.invoke_and_read(det._decode)
                outputs = det.model.run_in_place()  # every output dequantized (the earlier path)
                regressors = next(o for o in outputs if o.shape[-1] == 16)
                scores = next(o for o in outputs if o.shape[-1] == 1)
                slow = decode_candidates(
                    regressors, scores, det._anchor_list, threshold=det._threshold,
                    inv_scale=1.0 / det.size, score_clip=det.spec.score_clip,
                )
                assert fast == slow
                seen += len(fast[0])
                det.clear()
        assert seen > 10  # candidates were decoded, not only empty lists compared
    finally:
        pipeline.close()


@pytest.mark.parametrize(("scale", "zero_point"), [(0.4, -20), (0.0123, 5), (2.5, 100), (1e-4, -128)])
@pytest.mark.parametrize("min_score", [0.01, 0.3, 0.5, 0.5001, 0.9, 0.999])
def test_the_raw_threshold_keeps_exactly_the_anchors_the_dequantized_one_keeps(
    scale: float, zero_point: int, min_score: float
) -> None:
    """An int8 detector's scores are compared raw, with the threshold turned into a level once:
    every level must be kept or dropped as its dequantized value is (none passing, all passing
    and the levels either side of the boundary included)."""
    params = QuantParams(scale, zero_point, np.int8)
    levels = np.arange(-128, 128).astype(np.int8)
    real = dequantize(levels, params)
    threshold = logit_threshold(min_score)
    level = raw_threshold(threshold, levels, lambda q: dequantize(q, params))
    assert ((levels >= level) == (real >= threshold)).all()


def colour_warp_crop(classifier: EmotionClassifier, pixels: Pixels, det: Detection) -> Pixels:
    """The crop as first written: warp the colour frame at k x 64, area-average to 64, grey."""
    h, w = pixels.shape[:2]
    bx, by, bw, bh = det.box
    cx, cy = (bx + bw / 2) * w, (by + bh / 2) * h
    side = max(bw * w, bh * h) * (1.0 + 2.0 * classifier.margin)
    (rx, ry), (lx, ly) = det.keypoints[0], det.keypoints[1]
    angle = math.degrees(math.atan2((ly - ry) * h, (lx - rx) * w))
    k = 1
    while k < 4 and side >= 64 * k * 2:
        k *= 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, 64 * k / side)
    m[0, 2] += 32 * k - cx
    m[1, 2] += 32 * k - cy
    big = cv2.warpAffine(pixels, m, (64 * k, 64 * k), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    small = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA) if k > 1 else big
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)


def test_grey_region_crop_is_the_colour_warp_up_to_rounding(pipeline: VisionPipeline, media: Path) -> None:
    """``align`` turns only the sampled region grey and warps one channel (a grey frame: warps
    it where it is, at every size): the crop must be the colour warp's within rounding, for
    small, large (k = 2, 4) and tilted faces, and for faces cut by the frame's edge (the region
    clipped, the rest black as before)."""
    image = read(media, "astronaut.png")
    classifier = pipeline.classifier
    seen: set[int] = set()
    for scale in (0.25, 0.5, 1.0, 2.0):
        frame = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for angle in (0.0, 25.0):
            turn = cv2.getRotationMatrix2D((frame.shape[1] / 2, frame.shape[0] / 2), angle, 1.0)
            turned = cv2.warpAffine(frame, turn, (frame.shape[1], frame.shape[0]))
            for shift in (0, 1):  # 1: the face half out of the frame on the left
                cut = turned[:, int(turned.shape[1] * 0.30) :] if shift else turned
                cut = np.ascontiguousarray(cut)
                for det in pipeline.detect(cut):
                    side = max(det.box[2] * cut.shape[1], det.box[3] * cut.shape[0]) * 1.3
                    seen.add(4 if side >= 256 else 2 if side >= 128 else 1)
                    fast = classifier.align(cut, det).astype(int)
                    grey = classifier.align(cv2.cvtColor(cut, cv2.COLOR_BGR2GRAY), det).astype(int)
                    slow = colour_warp_crop(classifier, cut, det).astype(int)
                    classifier.clear()
                    for crop in (fast, grey):  # from the colour frame and from a grey frame
                        diff = np.abs(crop - slow)
                        assert diff.max() <= 3, (scale, angle, shift)
                        assert diff.mean() < 0.6, (scale, angle, shift)
    assert seen == {1, 2, 4}
    assert pipeline.scratch_is_zero()
