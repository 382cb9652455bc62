"""The quality gate: each failing check abstains with its own reason; a good face passes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.vision.pipeline import VisionPipeline
from agent.vision.quality import GateLimits, assess, laplacian_variance, sharpness_index, yaw_degrees

from .conftest import read

LIMITS = GateLimits()
NOSE_RIGHT = np.array([[0, 0], [0, 0], [14, 0], [0, 0], [0, 0], [0, 0]], np.float32)
FRONTAL = np.array([[20, 25], [44, 25], [32, 38], [32, 48], [8, 28], [56, 28]], np.float32)


@pytest.fixture(scope="module")
def face_crop(media: Path) -> np.ndarray:
    """A real 64 x 64 grey face crop (the astronaut)."""
    grey = cv2.cvtColor(read(media, "astronaut.png")[70:175, 175:280], cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)


def test_laplacian_variance_matches_opencv(face_crop: np.ndarray) -> None:
    ours = laplacian_variance(face_crop)
    ref = cv2.Laplacian(face_crop.astype(np.float32), cv2.CV_32F, ksize=1)[1:-1, 1:-1].var()
    assert ours == pytest.approx(float(ref), rel=1e-4)
    assert laplacian_variance(np.full((64, 64), 128, np.uint8)) == 0.0


def test_sharpness_index_is_the_laplacian_variance_of_the_smoothed_crop_over_its_variance(
    face_crop: np.ndarray,
) -> None:
    med = cv2.GaussianBlur(face_crop.astype(np.float32), (5, 5), 1.5)
    ref = 100 * cv2.Laplacian(med, cv2.CV_32F, ksize=1)[1:-1, 1:-1].var() / med.var()
    assert sharpness_index(face_crop) == pytest.approx(float(ref), rel=1e-4)
    assert sharpness_index(np.full((64, 64), 128, np.uint8)) == 0.0


def test_yaw_is_zero_for_a_frontal_face_and_grows_as_the_nose_moves_sideways() -> None:
    assert yaw_degrees(FRONTAL) == pytest.approx(0.0)
    turned = FRONTAL.copy()
    turned[2, 0] += 6  # nose tip half-way to an eye
    more = FRONTAL.copy()
    more[2, 0] += 12
    assert 30 < yaw_degrees(turned) < yaw_degrees(more) < 90
    mirrored = FRONTAL.copy()
    mirrored[2, 0] -= 6
    assert yaw_degrees(mirrored) == pytest.approx(yaw_degrees(turned))


def test_yaw_ignores_roll_of_the_whole_head() -> None:
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    assert yaw_degrees(FRONTAL @ rot.T) == pytest.approx(0.0, abs=1e-3)


def test_a_good_face_passes_with_its_figures(face_crop: np.ndarray) -> None:
    q = assess(face_crop, 105.0, FRONTAL, LIMITS)
    assert q.passed
    assert q.abstain_reason is None
    assert q.face_px == 105.0
    assert q.sharpness > LIMITS.min_sharpness
    assert LIMITS.min_brightness < q.brightness < LIMITS.max_brightness


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c, px, k: (c, 20.0, k), "too_small"),
        (lambda c, px, k: ((c * 0.05).astype(np.uint8), px, k), "too_dark"),
        (lambda c, px, k: (np.clip(c.astype(int) + 200, 0, 255).astype(np.uint8), px, k), "too_bright"),
        (lambda c, px, k: (cv2.GaussianBlur(c, (0, 0), 3), px, k), "blurred"),
        (lambda c, px, k: (c, px, k + NOSE_RIGHT), "turned"),
    ],
)
def test_each_failing_check_abstains_with_its_reason(
    face_crop: np.ndarray, change: object, reason: str
) -> None:
    crop, px, kps = change(face_crop, 105.0, FRONTAL)  # type: ignore[operator]
    q = assess(crop, px, kps, LIMITS)
    assert q.abstain_reason == reason
    assert not q.passed


def test_the_pipelines_fast_measure_equals_the_numpy_reference(
    face_crop: np.ndarray, pipeline: VisionPipeline
) -> None:
    sharpness, brightness = pipeline.classifier.measure(face_crop)
    pipeline.clear()
    assert sharpness == pytest.approx(sharpness_index(face_crop), rel=1e-4)
    assert brightness == pytest.approx(float(face_crop.mean()), rel=1e-6)
