"""The vision stage on real faces with the real models: boxes, counts, emotions, abstentions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.clock import FakeClock
from agent.emotions import EMOTIONS
from agent.errors import SourceError
from agent.frame import Frame, Pixels
from agent.privacy.lease import lease
from agent.vision.observation import Detection, FaceObservation, Quality
from agent.vision.pipeline import VisionPipeline

from .conftest import ASTRONAUT_FACE, NON_FACES, read


def box_px(box: tuple[float, float, float, float], w: int, h: int) -> tuple[float, float, float, float]:
    x, y, bw, bh = box
    return x * w, y * h, (x + bw) * w, (y + bh) * h


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_astronaut_gives_one_face_on_her_face_and_she_looks_happy(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    faces = pipeline.analyze(astronaut.copy())
    assert len(faces) == 1
    face = faces[0]
    assert iou(box_px(face.box, 512, 512), ASTRONAUT_FACE) > 0.7
    assert face.score > 0.8
    assert not face.abstained, face.quality
    assert face.emotion == "happy"
    probs = dict(face.probs or ())
    assert tuple(probs) == EMOTIONS == pipeline.labels
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)


def test_keypoints_put_the_eyes_above_the_mouth_inside_the_box(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    (face,) = pipeline.analyze(astronaut.copy())
    x, y, w, h = face.box
    (rex, rey), (lex, ley), _nose, (_mx, my) = face.keypoints[:4]
    assert rex < lex, "keypoint 0 is the eye on the image's left"
    assert max(rey, ley) < my
    for kx, ky in face.keypoints[:4]:
        assert x <= kx <= x + w
        assert y <= ky <= y + h


@pytest.mark.parametrize("name", NON_FACES)
def test_images_without_a_face_give_no_face(pipeline: VisionPipeline, media: Path, name: str) -> None:
    assert pipeline.analyze(read(media, name)) == []


def test_group_photo_gives_all_six_faces(pipeline: VisionPipeline, media: Path) -> None:
    faces = pipeline.analyze(read(media, "group6.jpg"))
    assert len(faces) == 6
    centres = sorted(round(f.box[0] + f.box[2] / 2, 1) for f in faces)
    assert centres == [0.1, 0.2, 0.4, 0.6, 0.7, 0.9]  # one face per person, left to right


GROUP_FACES = ((12, 234, 209, 431), (227, 121, 411, 305), (417, 250, 612, 445), (1087, 254, 1263, 430))
"""x0, y0, x1, y1 regions around four faces of group6.jpg (with their hair)."""


def test_composite_of_real_faces_gives_the_right_count(
    media: Path, astronaut: Pixels, pipeline: VisionPipeline
) -> None:
    group = read(media, "group6.jpg")
    canvas = np.full((480, 800, 3), 110, np.uint8)
    crops = [group[y0:y1, x0:x1] for x0, y0, x1, y1 in GROUP_FACES]
    crops.append(astronaut[40:220, 140:310])
    for i, crop in enumerate(crops):
        x, y = 20 + (i % 3) * 260, 20 + (i // 3) * 240
        canvas[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    faces = pipeline.analyze(canvas)
    assert len(faces) == len(crops) == 5
    cells = sorted((int(f.box[1] * 480 // 240), int(f.box[0] * 800 // 260)) for f in faces)
    assert cells == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], "one box per pasted face"


def test_letterbox_maps_boxes_back_exactly(pipeline: VisionPipeline, astronaut: Pixels) -> None:
    """A 2:1 frame and the same frame padded to a square by hand give the model the same input,
    so the boxes must agree to a fraction of a pixel once mapped back."""
    wide = np.ascontiguousarray(astronaut[20:276])  # 512 x 256, the face inside
    square = np.zeros((512, 512, 3), np.uint8)
    square[128:384] = wide
    (a,) = pipeline.detect(wide)
    (b,) = pipeline.detect(square)
    a_px = box_px(a.box, 512, 256)
    bx0, by0, bx1, by1 = box_px(b.box, 512, 512)
    b_px = (bx0, by0 - 128, bx1, by1 - 128)
    assert max(abs(p - q) for p, q in zip(a_px, b_px, strict=True)) < 0.5, (a_px, b_px)
    for (ax, ay), (kx, ky) in zip(a.keypoints, b.keypoints, strict=True):
        assert abs(ax * 512 - kx * 512) < 0.5
        assert abs(ay * 256 - (ky * 512 - 128)) < 0.5


def test_face_in_a_wide_or_tall_frame_maps_to_its_own_pixels(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """Padding changes the face's size in the model input, not where its box lands."""
    (ref,) = pipeline.detect(astronaut.copy())
    ref_px = box_px(ref.box, 512, 512)
    for (h, w), (oy, ox) in (((512, 1100), (0, 333)), ((900, 512), (211, 0))):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[oy : oy + 512, ox : ox + 512] = astronaut
        (det,) = pipeline.detect(frame)
        x0, y0, x1, y1 = box_px(det.box, w, h)
        moved = (x0 - ox, y0 - oy, x1 - ox, y1 - oy)
        assert iou(moved, ref_px) > 0.7, (moved, ref_px)
        assert iou(moved, ASTRONAUT_FACE) > 0.6, moved


@pytest.mark.parametrize("box", [(1.0, 0.2, 0.0, 0.0), (0.3, 0.3, 0.0, 0.0)])
def test_a_detection_of_no_area_is_measured_as_too_small_not_a_crash(
    pipeline: VisionPipeline, astronaut: Pixels, box: tuple[float, float, float, float]
) -> None:
    """A box clipped to nothing at the frame's edge (or of no area) divided by zero in the crop."""
    kps = ((box[0], box[1]),) * 6
    pipeline.detector.detect = lambda *_a, **_k: [Detection(box=box, score=0.9, keypoints=kps)]  # type: ignore[method-assign]
    try:
        (face,) = pipeline.analyze(astronaut.copy())
    finally:
        del pipeline.detector.detect
    assert face.quality.abstain_reason == "too_small"
    assert pipeline.scratch_is_zero()


def test_tiny_face_abstains_as_too_small(pipeline: VisionPipeline, astronaut: Pixels) -> None:
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    (face,) = pipeline.analyze(small)
    assert face.abstained
    assert face.probs is None
    assert face.emotion is None
    assert face.quality.abstain_reason == "too_small"
    assert face.quality.face_px < 40


def test_blurred_face_abstains_as_blurred(pipeline: VisionPipeline, astronaut: Pixels) -> None:
    (face,) = pipeline.analyze(cv2.GaussianBlur(astronaut, (0, 0), 6))
    assert face.quality.abstain_reason == "blurred"
    assert face.quality.sharpness < pipeline.limits.min_sharpness
    assert face.probs is None


def test_dark_face_abstains_as_too_dark(pipeline: VisionPipeline, astronaut: Pixels) -> None:
    """Under min_brightness (10, calibrated by tools/robustness_report.py) the face abstains."""
    (face,) = pipeline.analyze((astronaut * 0.05).astype(np.uint8))
    assert face.quality.abstain_reason == "too_dark"
    assert face.quality.brightness < 10
    assert face.probs is None


def test_dim_face_is_normalised_and_read_instead_of_abstaining(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """At light x0.15 (mean grey ~20) the old gate (min 40) abstained; the crop is now
    histogram-normalised and read with the clean face's label."""
    (clean,) = pipeline.analyze(astronaut)
    (face,) = pipeline.analyze((astronaut * 0.15).astype(np.uint8))
    assert 10 < face.quality.brightness < 40
    assert face.quality.passed
    assert face.emotion == clean.emotion == "happy"


def test_noise_does_not_raise_the_sharpness_figure_and_blur_lowers_it(
    pipeline: VisionPipeline, astronaut: Pixels
) -> None:
    """The raw Laplacian variance rose ~7x with sigma-60 noise and never flagged motion blur;
    the sharpness index moves with blur and barely with noise."""
    rng = np.random.default_rng(0)
    (clean,) = pipeline.analyze(astronaut)
    noisy = np.clip(astronaut + rng.normal(0, 40, astronaut.shape), 0, 255).astype(np.uint8)
    (with_noise,) = pipeline.analyze(noisy)
    kernel = np.full((1, 31), 1 / 31, np.float32)
    (blurred,) = pipeline.analyze(cv2.filter2D(astronaut, -1, kernel))
    assert with_noise.quality.sharpness < 2 * clean.quality.sharpness
    assert blurred.quality.sharpness < clean.quality.sharpness / 2.5
    assert with_noise.quality.abstain_reason is None


def test_turned_heads_in_the_group_abstain_as_turned(pipeline: VisionPipeline, media: Path) -> None:
    faces = pipeline.analyze(read(media, "group6.jpg"))
    reasons = {f.quality.abstain_reason for f in faces}
    assert "turned" in reasons
    assert None in reasons  # the frontal faces are classified
    for f in faces:
        assert (f.quality.abstain_reason == "turned") == (f.quality.yaw_degrees > 45)


def _holds_only_numbers(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_holds_only_numbers(v) for v in value)
    if dataclasses.is_dataclass(value):
        return all(_holds_only_numbers(getattr(value, f.name)) for f in dataclasses.fields(value))
    return value is None or type(value) in (float, int, str, bool)


def test_observations_and_detections_hold_no_arrays(pipeline: VisionPipeline, media: Path) -> None:
    group = read(media, "group6.jpg")
    faces = pipeline.analyze(group)
    dets = pipeline.detect(group)
    assert faces
    assert dets
    for obj in [*faces, *dets]:
        assert isinstance(obj, FaceObservation | Detection)
        assert _holds_only_numbers(obj), obj
    assert all(isinstance(f.quality, Quality) for f in faces)


def _arrays_in(obj: object, depth: int = 0) -> list[np.ndarray]:
    """Every numpy array reachable from an object's attributes (a few levels deep)."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if depth > 3:
        return []
    found: list[np.ndarray] = []
    items: list[object] = []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, list | tuple):
        items = list(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("agent."):
        items = list(vars(obj).values())
    for item in items:
        found.extend(_arrays_in(item, depth + 1))
    return found


def test_every_buffer_that_held_pixels_is_zero_after_analyze(pipeline: VisionPipeline, media: Path) -> None:
    pipeline.analyze(read(media, "group6.jpg"))
    assert pipeline.scratch_is_zero()
    arrays = _arrays_in(pipeline)
    assert len(arrays) >= len(pipeline.scratch())
    for arr in arrays:  # writeable arrays are scratch (zero); the rest are read-only constants
        assert not arr.flags.writeable or not arr.any(), arr.shape


def test_scratch_is_zero_after_detect_and_after_a_failure(
    pipeline: VisionPipeline, astronaut: Pixels, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.detect(astronaut.copy())
    assert pipeline.scratch_is_zero()

    def boom(grey: np.ndarray) -> None:
        raise RuntimeError("classifier failed")

    monkeypatch.setattr(pipeline.classifier, "classify", boom)
    with pytest.raises(RuntimeError, match="classifier failed"):
        pipeline.analyze(astronaut.copy())
    assert pipeline.scratch_is_zero()


def test_inside_a_lease_the_frame_is_zero_afterwards_and_faces_survive(
    pipeline: VisionPipeline, astronaut: Pixels, clock: FakeClock
) -> None:
    frame = Frame(pixels=astronaut.copy(), index=0, captured_mono=clock.monotonic(), timestamp=clock.time())
    with lease(frame) as pixels:
        faces = pipeline.analyze(pixels)
    assert not frame.pixels.any()
    assert len(faces) == 1
    assert faces[0].emotion == "happy"


@pytest.mark.parametrize(
    ("pixels", "found"),
    [
        (np.zeros((64, 64, 1), np.uint8), "shape (64, 64, 1)"),
        (np.zeros((64, 64, 3), np.float32), "dtype float32"),
        (np.zeros((64, 64, 4), np.uint8), "shape (64, 64, 4)"),
    ],
)
def test_wrong_pixels_are_refused_with_what_was_found(
    pipeline: VisionPipeline, pixels: np.ndarray, found: str
) -> None:
    with pytest.raises(SourceError, match="BGR uint8 H x W x 3") as err:
        pipeline.analyze(pixels)  # type: ignore[arg-type]
    assert found in str(err.value)


def test_a_closed_pipeline_says_so(astronaut: Pixels) -> None:
    from agent.errors import RuntimeFailure  # noqa: PLC0415
    from agent.vision.settings import VisionConfig  # noqa: PLC0415

    p = VisionPipeline.from_config(VisionConfig(accelerator="cpu"))
    p.analyze(astronaut.copy())
    p.close()
    assert not any(b.any() for b in p.scratch())
    with pytest.raises(RuntimeFailure, match="model was closed"):
        p.analyze(astronaut.copy())


def test_a_face_filling_a_still_is_found_on_a_padded_copy(pipeline: VisionPipeline, media: Path) -> None:
    """insightface's tight 112 x 112 portrait: full range scores it under the threshold as it
    is; a still is also searched with a black border, and the box maps back onto the face."""
    portrait = read(media, "tom_hanks.png")
    assert pipeline.analyze(portrait) == []
    (face,) = pipeline.analyze(portrait, still=True)
    x, y, w, h = face.box
    assert 0.6 < w <= 1.0
    assert 0.6 < h <= 1.0
    assert 0.3 < x + w / 2 < 0.7
    assert 0.3 < y + h / 2 < 0.8
    (rx, ry), (lx, _) = face.keypoints[0], face.keypoints[1]
    assert rx < lx  # keypoints mapped back too: his right eye left of his left eye in the image
    assert 0.2 < ry < 0.6
    assert face.emotion == "happy"
    assert pipeline.scratch_is_zero()


@pytest.mark.parametrize("name", NON_FACES)
def test_the_padded_retry_finds_no_face_in_non_face_stills(
    pipeline: VisionPipeline, media: Path, name: str
) -> None:
    assert pipeline.analyze(read(media, name), still=True) == []
