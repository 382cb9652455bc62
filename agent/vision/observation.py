"""What the vision stage hands on: plain numbers about one face, never pixels.

These objects outlive the frame, so they hold only floats, strings and tuples; a test checks
that no numpy array can hide in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Quality:
    """Quality figures of one face and the gate's verdict."""

    face_px: float
    """Shorter side of the face box in source pixels."""
    sharpness: float
    """Variance of the Laplacian of the grey face crop."""
    brightness: float
    """Mean grey level of the face crop (0..255)."""
    yaw_degrees: float
    """Head turn estimated from the eye and nose keypoints (0 = frontal)."""
    abstain_reason: str | None = None
    """None when the face passed the gate; else too_small, blurred, too_dark, too_bright, turned."""

    @property
    def passed(self) -> bool:
        return self.abstain_reason is None


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One face in one frame: where (normalised 0..1), how sure, how good, and which emotion."""

    box: tuple[float, float, float, float]
    """x, y, w, h normalised to the frame (0..1)."""
    score: float
    keypoints: tuple[tuple[float, float], ...]
    """Six BlazeFace keypoints (right eye, left eye, nose, mouth, right ear, left ear), 0..1."""
    quality: Quality
    probs: tuple[tuple[str, float], ...] | None = field(default=None)
    """(label, probability) in the model's label order; None when the face abstained."""

    @property
    def emotion(self) -> str | None:
        if self.probs is None:
            return None
        return max(self.probs, key=lambda lp: lp[1])[0]

    @property
    def abstained(self) -> bool:
        return self.probs is None


@dataclass(frozen=True, slots=True)
class Detection:
    """One face found by the detector: where, how sure and its six keypoints, normalised 0..1.

    Numbers only, like ``FaceObservation``: it may outlive the frame (gating, privacy zones).
    """

    box: tuple[float, float, float, float]
    """x, y, w, h normalised to the frame (0..1), clipped to it."""
    score: float
    keypoints: tuple[tuple[float, float], ...]
    """Six BlazeFace keypoints (right eye, left eye, nose, mouth, right ear, left ear), 0..1."""
