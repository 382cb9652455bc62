"""Helpers for camera tests: small real media written with OpenCV."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.frame import Frame


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


def read_allocating(src: Any, cam: Any) -> tuple[Frame | None, int]:
    """One ``src.read()`` of a picamera2 source and the peak bytes it allocated after ``cam``
    (its fake camera) handed the request over: what the read copied out of the camera."""
    capture = cam.capture_request
    after_capture: list[int] = []

    def measured_capture(*args: object, **kwargs: object) -> object:
        request = capture(*args, **kwargs)
        tracemalloc.reset_peak()
        after_capture.append(tracemalloc.get_traced_memory()[0])
        return request

    cam.capture_request = measured_capture
    tracemalloc.start()
    try:
        frame = src.read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        cam.capture_request = capture
    return frame, peak - after_capture[0]
