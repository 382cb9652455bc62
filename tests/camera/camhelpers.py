"""Helpers for camera tests: small real media written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    """A video whose frame i is filled with grey level 20 * i (so order is checkable)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


def grey_level(pixels: np.ndarray) -> int:
    return round(float(pixels.mean()))
