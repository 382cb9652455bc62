"""Live sources through OpenCV: V4L2 devices (USB webcams, /dev/videoN) and network streams.

V4L2 goes through ``CAP_V4L2`` with a one-buffer driver queue, so the kernel does not hoard
stale frames; RTSP and HTTP MJPEG go through ``CAP_FFMPEG`` with open and read timeouts, so a
dead stream fails instead of hanging. URLs are logged with their password removed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import cv2

from agent.camera.base import SourceInfo, SourceOptions, Wanted, every_frame, redact_url
from agent.camera.buffers import FramePool
from agent.camera.replay import quiet_decoder_logs
from agent.camera.scaled_copy import decoded_frame, scaled_copy, scaling_tally
from agent.clock import Clock
from agent.errors import CameraLost, SourceError
from agent.frame import Frame


class OpenCVSource:
    """A V4L2 camera (``/dev/videoN`` or an index) or an RTSP/HTTP stream read with OpenCV."""

    key: ClassVar[str] = "opencv"

    def __init__(self, target: str, options: SourceOptions, clock: Clock) -> None:
        self.target = target
        self.options = options
        self.clock = clock
        self.is_device = target.isdigit() or target.startswith("/dev/")
        self.name = target if self.is_device else redact_url(target)
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._size: tuple[int, int] | None = None
        self._count = 0
        self._pool = FramePool()
        self.scaled = scaled_copy(options.detector_side)
        """Makes each frame's copy for the detector (``Frame.lores``) when one was asked for."""

    @property
    def info(self) -> SourceInfo:
        w, h = self._size if self._size else (None, None)
        return SourceInfo(self.key, self.name, self._fps, w, h, live=True, **scaling_tally(self.scaled))

    def open(self) -> None:
        quiet_decoder_logs()
        cap = self._open_device() if self.is_device else self._open_stream()
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure())
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self._fps = fps if math.isfinite(fps) and fps > 0 else None
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def _open_device(self) -> cv2.VideoCapture:
        path = Path(f"/dev/video{self.target}" if self.target.isdigit() else self.target)
        if not path.exists():
            raise SourceError(
                f"{path}: no such camera device; list cameras with `v4l2-ctl --list-devices` "
                "(package v4l-utils) and check the service user is in the video group"
            )
        cap = cv2.VideoCapture(str(path), cv2.CAP_V4L2)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.options.width and self.options.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.options.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.height)
            cap.set(cv2.CAP_PROP_FPS, self.options.fps)
        return cap

    def _open_stream(self) -> cv2.VideoCapture:
        ms = int(self.options.timeout_seconds * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)

    def _open_failure(self) -> str:
        if self.is_device:
            return (
                f"{self.name}: the camera exists but cannot be opened (busy in another program, "
                "no permission, or not a capture device)"
            )
        return (
            f"{self.name}: cannot open the stream within {self.options.timeout_seconds:g} s "
            "(wrong address or path, server down, bad credentials, or an unsupported format; "
            "HTTP must be MJPEG, multipart/x-mixed-replace)"
        )

    def read(self) -> Frame | None:
        return self.read_wanted(every_frame)

    def read_wanted(self, wanted: Wanted) -> Frame | None:
        """The next frame ``wanted`` accepts, asked with the time it was grabbed: the driver's
        or FFmpeg's decode happens for every frame, the conversion to BGR (for an MJPEG webcam,
        the JPEG decode) only for the frames analysed."""
        if self._cap is None:
            raise CameraLost(f"{self.name}: read from a closed camera")
        while True:
            if not self._cap.grab():
                raise CameraLost(f"{self.name}: the camera stopped delivering frames")
            index, self._count = self._count, self._count + 1
            if wanted(self.clock.monotonic()):
                break
        pixels = self._pool.retrieve(self._cap)
        if pixels is None:
            raise CameraLost(f"{self.name}: the camera stopped delivering frames")
        return decoded_frame(pixels, index, self.clock, self.scaled)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pool.clear()
        if self.scaled is not None:
            self.scaled.close()
