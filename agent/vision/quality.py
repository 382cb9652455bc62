"""The quality gate, pure numpy: faces that would give wrong readings abstain, with a reason.

Poor light, low resolution, blur and turned heads make emotion readings wrong, so such a face
is counted as abstained and never classified. The figures are measured on the aligned grey
crop the classifier would see, so thresholds do not depend on the camera's resolution; the
face size is measured in source pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.vision.observation import Quality

NOSE_DEPTH_RATIO = 0.6
"""Nose-tip depth in front of the eye line, as a share of half the eye distance (average
adult head); turns the nose's sideways offset into a yaw angle."""


@dataclass(frozen=True)
class GateLimits:
    """The thresholds of ``vision.quality`` (see ``agent.config.QualityConfig``)."""

    min_face_px: float = 40.0
    min_sharpness: float = 0.6
    min_brightness: float = 10.0
    max_brightness: float = 250.0
    max_yaw_degrees: float = 45.0
    normalise_below: float = 50.0


def laplacian_variance(grey: npt.NDArray[np.uint8] | npt.NDArray[np.float32]) -> float:
    """Variance of the 4-neighbour Laplacian over the interior (OpenCV's ksize=1 kernel)."""
    g = grey.astype(np.float32, copy=False)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


DENOISE_SIGMA = 1.5
"""Gaussian (5 x 5, sigma 1.5) applied before the Laplacian: smooths sensor noise, keeps the
coarser edges that motion blur removes. A 5 x 5 median did the same job but costs 0.39 ms per
64 x 64 crop in OpenCV 5.1 (the Gaussian 6 us)."""


def _gaussian_5x5(img: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """OpenCV's ``GaussianBlur(img, (5, 5), 1.5)`` (reflect-101 border) in numpy."""
    x = np.arange(-2, 3, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * DENOISE_SIGMA**2))
    k /= k.sum()
    p = np.pad(img.astype(np.float64), 2, mode="reflect")
    rows = sum(k[i] * p[:, i : i + img.shape[1]] for i in range(5))
    out = sum(k[i] * rows[i : i + img.shape[0], :] for i in range(5))
    return np.asarray(out, np.float32)


def sharpness_index(grey: npt.NDArray[np.uint8]) -> float:
    """How much edge detail a crop holds, whatever its contrast or noise: the Laplacian variance
    of the Gaussian-smoothed (5 x 5, sigma 1.5) crop over the smoothed crop's grey variance,
    x 100.

    The raw Laplacian variance (``laplacian_variance``) grows with sensor noise (sigma 60: 16x
    the clean figure) and with contrast, so it never flagged a 31 px motion blur. Smoothed, the
    noise is mostly gone, and dividing by the variance makes a dim or low-contrast face measure
    as sharp as it is (tools/robustness_report.py: clean faces 32-160 px high 1.24-2.6, sigma-60
    noise 2.0-2.9, 31 px motion blur 0.28-0.67). Pure numpy reference;
    ``EmotionClassifier.measure`` computes the same with OpenCV."""
    smooth = _gaussian_5x5(grey.astype(np.float32))
    return 100.0 * laplacian_variance(smooth) / max(float(smooth.var()), 1.0)


def yaw_degrees(keypoints: Sequence[Sequence[float]]) -> float:
    """Head turn from the eyes and nose tip (pixel coordinates, rows = BlazeFace keypoints).

    The nose tip's offset from the eyes' midpoint along the eye line, relative to half the
    eye distance, is ``depth * tan(yaw)`` for a head turned by ``yaw``. Plain floats: six
    points do not need numpy.
    """
    (rx, ry), (lx, ly), (nx, ny) = keypoints[0][:2], keypoints[1][:2], keypoints[2][:2]
    ax, ay = float(lx - rx), float(ly - ry)
    half = math.hypot(ax, ay) / 2.0
    if half <= 1e-6:
        return 90.0
    offset = ((nx - (rx + lx) / 2.0) * ax + (ny - (ry + ly) / 2.0) * ay) / (2.0 * half)
    return abs(math.degrees(math.atan(float(offset) / half / NOSE_DEPTH_RATIO)))


def gate(face_px: float, sharpness: float, brightness: float, yaw: float, limits: GateLimits) -> Quality:
    """Decide on measured figures: the first failing check (size, light, blur, pose) is the reason."""
    reason: str | None = None
    if face_px < limits.min_face_px:
        reason = "too_small"
    elif brightness < limits.min_brightness:
        reason = "too_dark"
    elif brightness > limits.max_brightness:
        reason = "too_bright"
    elif sharpness < limits.min_sharpness:
        reason = "blurred"
    elif yaw > limits.max_yaw_degrees:
        reason = "turned"
    return Quality(
        face_px=round(face_px, 1),
        sharpness=round(sharpness, 1),
        brightness=round(brightness, 1),
        yaw_degrees=round(yaw, 1),
        abstain_reason=reason,
    )


def assess(
    grey_crop: npt.NDArray[np.uint8],
    face_px: float,
    keypoints_px: Sequence[Sequence[float]],
    limits: GateLimits,
) -> Quality:
    """Measure one face crop with numpy and decide (the reference for the pipeline's fast path)."""
    return gate(
        face_px, sharpness_index(grey_crop), float(grey_crop.mean()), yaw_degrees(keypoints_px), limits
    )
