"""File replay: a video, a single image, or a folder of images sorted by name.

Replay stands in for a camera in demos and tests. In real time (``realtime``) frame i is decoded
and handed out no earlier than i / fps after the first, measured on the injected Clock, so a FakeClock
replays a minute in milliseconds; otherwise frames come as fast as the consumer pulls. Images
are decoded from disk at each read rather than cached, so no pixels outlive their lease.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from agent.camera.base import SourceInfo, SourceOptions
from agent.clock import Clock
from agent.errors import SourceError
from agent.frame import Frame, Pixels

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MAX_NATIVE_FPS = 240.0


def quiet_decoder_logs() -> None:
    """Keep FFmpeg's and OpenCV's own stderr chatter out of the user's terminal unless debugging.

    Our SourceError says what failed; with ``--log-level DEBUG`` the decoders speak again.
    Called when a source opens (never at import); FFmpeg reads the variable on first use.
    """
    if logger.isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def decode_image(path: Path) -> Pixels:
    """Read one image as BGR uint8; SourceError naming the file when it cannot be decoded."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the image: {exc.strerror or exc}") from exc
    pixels = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if pixels is None:
        raise SourceError(
            f"{path}: unreadable image (not a valid {path.suffix or 'image'} file; "
            f"supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; SourceError when there are none."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from exc
    if not entries:
        raise SourceError(
            f"{folder}: empty folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it"
        )
    return entries


class ReplaySource:
    """A video file, an image or a folder of images, replayed as a camera would deliver them."""

    key: ClassVar[str] = "replay"

    def __init__(self, target: str, options: SourceOptions, clock: Clock) -> None:
        self.path = Path(target)
        self.options = options
        self.clock = clock
        self._images: list[Path] = []
        self._cap: cv2.VideoCapture | None = None
        self._fps = options.fps
        self._size: tuple[int, int] | None = None
        self._pos = 0  # position in the file or folder (restarts when looping)
        self._count = 0  # frames handed out since open
        self._start_mono: float | None = None
        self._ended = False
        self.mode = "unopened"

    @property
    def info(self) -> SourceInfo:
        w, h = self._size if self._size else (None, None)
        return SourceInfo(self.key, str(self.path), self._fps, w, h, live=False)

    def open(self) -> None:
        quiet_decoder_logs()
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self._images = list_images(self.path)
            self.mode = "folder"
        elif self.path.suffix.lower() in IMAGE_SUFFIXES:
            self._images = [self.path]
            self.mode = "image"
        else:
            self.mode = "video"
            self._open_video()
        if self.mode != "video":
            first = decode_image(self._images[0])  # fail now, not mid-stream
            self._size = (first.shape[1], first.shape[0])
            first.fill(0)
        logger.info(
            "replay source opened",
            extra={"fields": {"mode": self.mode, "fps": self._fps, "frames": len(self._images) or None}},
        )

    def _open_video(self) -> None:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{self.path}: cannot decode the video (corrupt, truncated or not a video file); "
                f"images need one of: {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if math.isfinite(fps) and 0 < fps <= MAX_NATIVE_FPS:
            self._fps = fps
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        ok, probe = cap.read()  # a container that opens but holds no decodable frame is corrupt
        cap.release()
        if not ok or probe is None:
            raise SourceError(f"{self.path}: cannot decode the video: no frame could be decoded")
        probe.fill(0)
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)

    def read(self) -> Frame | None:
        """The next frame, decoded when it is due (never decoded and then left waiting), its
        lifetime starting the moment it leaves the decoder."""
        if self._ended:
            return None
        self._pace()
        pixels = self._next_pixels()
        if pixels is None and self.options.loop and self._pos > 0:
            self._rewind()
            pixels = self._next_pixels()
        decoded = self.clock.monotonic()
        if pixels is None:
            self._ended = True
            return None
        source_time = self._pos / self._fps
        frame = Frame(
            pixels=pixels,
            index=self._count,
            captured_mono=decoded,
            timestamp=self.clock.time(),
            source_time=source_time,
        )
        self._pos += 1
        self._count += 1
        return frame

    def _next_pixels(self) -> Pixels | None:
        if self.mode == "video":
            if self._cap is None:
                return None
            ok, pixels = self._cap.read()
            if not ok or pixels is None:
                return None
            return np.ascontiguousarray(pixels, dtype=np.uint8)
        if self._pos >= len(self._images):
            return None
        return decode_image(self._images[self._pos])

    def _rewind(self) -> None:
        self._pos = 0
        if self.mode == "video":
            if self._cap is not None:
                self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)

    def _pace(self) -> None:
        """In real time, wait on the Clock until this frame is due (count / fps after the first)."""
        if not self.options.realtime:
            return
        now = self.clock.monotonic()
        if self._start_mono is None:
            self._start_mono = now
            return
        due = self._start_mono + self._count / self._fps
        if due > now:
            self.clock.sleep(due - now)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._ended = True
