"""Where a frame goes inside the detector's square input: pure arithmetic, no OpenCV, so a camera
backend can ask for a frame already scaled to that size (picamera2's lores stream)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Placement:
    """A W x H frame resized to ``w`` x ``h`` and put at (x, y) inside an S x S input.

    ``cv2.resize`` scales continuous coordinates by exactly w/W and h/H, so ``to_frame``
    maps the model's output back without drift.
    """

    frame_w: int
    frame_h: int
    size: int
    x: int
    y: int
    w: int
    h: int

    @property
    def scaled_shape(self) -> tuple[int, int, int]:
        """The shape of the RGB image a camera's scaler delivers for it (``Frame.lores``)."""
        return (self.h, self.w, 3)

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, size: int) -> Placement:
        scale = size / max(frame_w, frame_h)
        w = max(1, min(size, round(frame_w * scale)))
        h = max(1, min(size, round(frame_h * scale)))
        return cls(frame_w, frame_h, size, (size - w) // 2, (size - h) // 2, w, h)

    def to_frame(self, xy: F32) -> F32:
        """Normalised input coordinates (..., 2) to normalised frame coordinates."""
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] * self.size - self.x) / self.w
        out[..., 1] = (xy[..., 1] * self.size - self.y) / self.h
        return out
