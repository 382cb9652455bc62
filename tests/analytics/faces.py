"""Builders of synthetic observations for the analytics tests (numbers only, as vision emits)."""

from __future__ import annotations

import math
import random

from agent.emotions import EMOTIONS
from agent.vision.observation import FaceObservation, Quality


def probs_for(label: str, p: float = 0.7) -> tuple[tuple[str, float], ...]:
    """A distribution peaked on ``label`` with the rest spread evenly."""
    rest = (1.0 - p) / (len(EMOTIONS) - 1)
    return tuple((e, p if e == label else rest) for e in EMOTIONS)


def face(
    *,
    x: float = 0.1,
    y: float = 0.1,
    w: float = 0.1,
    h: float = 0.1,
    label: str | None = "happy",
    p: float = 0.7,
    reason: str | None = None,
) -> FaceObservation:
    """One face at (x, y, w, h); abstained (probs None) when ``label`` is None."""
    quality = Quality(
        face_px=80,
        sharpness=100,
        brightness=120,
        yaw_degrees=0,
        abstain_reason=reason if label is None else None,
    )
    probs = probs_for(label, p) if label is not None else None
    return FaceObservation(box=(x, y, w, h), score=0.9, keypoints=(), quality=quality, probs=probs)


def seeded(seed: int) -> random.Random:
    """A reproducible RNG for track ids and noise in tests (production uses ``secrets``)."""
    return random.Random(seed)  # noqa: S311 - determinism is the point in tests


def sway(t: float, width: float = 0.05) -> float:
    """A head's sway at time ``t``: 0.2 widths of a face ``width`` wide, period 4 s.

    People's heads move; a face that never moves is taken for a poster and not counted."""
    return 0.2 * width * math.sin(2 * math.pi * t / 4)
