"""File replay: a video, a single image, or a folder of images sorted by name.

Replay stands in for a camera in demos and tests. In real time (``realtime``) frame i is decoded
and handed out no earlier than i / fps after the first, measured on the injected Clock, so a FakeClock
replays a minute in milliseconds; otherwise frames come as fast as the consumer pulls. Images
are decoded from disk at each read rather than cached, so no pixels outlive their lease; a
video's frames are decoded into a few reused buffers (``agent.camera.buffers``), each one
only once the frame it last carried is gone. A frame the rate limit turns away
(``read_wanted``) is grabbed but never converted to BGR (an image is read, then zeroed).

A file that cannot be used at all (missing, not a regular file, unreadable, empty, not media,
too small to analyse) is refused at ``open`` with SourceError naming it. Damage found later is
counted, not retried: an image in a folder that does not decode is skipped with a warning, and
a video that ends before its container's frame count is reported with the frames lost; both
add to ``lost`` (``SourceInfo.lost``). With ``loop`` the position keeps growing across passes
(``source_time`` = frames passed / fps), so windows and the fps limiter move on.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from agent import MAX_IMAGE_PIXELS
from agent.camera.base import SourceInfo, SourceOptions, Wanted, every_frame
from agent.camera.buffers import FramePool
from agent.camera.scaled_copy import decoded_frame, scaled_copy, scaling_tally
from agent.caught_stderr import caught_stderr
from agent.clock import Clock
from agent.errors import SourceError
from agent.frame import Frame, Pixels
from agent.privacy.lease import zero
from agent.user_files import file_kind, read_user_bytes

logger = logging.getLogger(__name__)

_PASSED_OVER: Pixels = np.zeros((0, 0, 3), np.uint8)
"""``_next_pixels``: a frame there, turned away (never one a caller sees)."""


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MAX_NATIVE_FPS = 240.0
MIN_SIDE = 8
"""Smallest width or height analysed: below it no face fits, and resizing may give 0 pixels."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
LOST_TOLERANCE = 1
"""Frames a container's count may be off by before a short video counts as damaged."""

OPENCV_LOG_LEVEL_ERROR = 2
"""cv::utils::logging::LOG_LEVEL_ERROR, for OpenCV 4.x (the Bookworm constraints pin 4.11)."""


def quiet_decoder_logs() -> None:
    """Keep FFmpeg's and OpenCV's own stderr chatter out of the user's terminal unless debugging.

    Our SourceError says what failed; with ``--log-level DEBUG`` the decoders speak again.
    Called when a source opens (never at import); FFmpeg reads the variable on first use.
    """
    if logger.isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    utils_logging = getattr(cv2.utils, "logging", None)  # OpenCV 5; 4.x wheels lack the module
    if utils_logging is not None:
        utils_logging.setLogLevel(utils_logging.LOG_LEVEL_ERROR)
    else:
        getattr(cv2, "setLogLevel")(OPENCV_LOG_LEVEL_ERROR)  # noqa: B009 - absent from OpenCV 5 stubs


DAMAGE_MESSAGES = ("Corrupt JPEG data", "Premature end of JPEG file")
"""libjpeg's warnings for a JPEG it decoded all the same, with grey or garbage where its data
was damaged or missing (a decoder's other messages, such as libpng's about colour profiles,
are harmless and only logged at debug level)."""


def decode_image(path: Path) -> Pixels:
    """Read one image as BGR uint8; SourceError naming the file when it cannot be used."""
    data = read_user_bytes(path, "image", SourceError, max_bytes=MAX_IMAGE_BYTES)
    if not data:
        raise SourceError(f"{path}: empty file (0 bytes), not an image")
    with caught_stderr() as said:
        try:
            pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:  # e.g. over OPENCV_IO_MAX_IMAGE_PIXELS
            pixels = None
    for line in said:
        logger.debug("the image decoder said: %s", line, extra={"fields": {"file": str(path)}})
    if pixels is None:
        why = f"; the decoder said: {said[-1]}" if said else ""
        raise SourceError(
            f"{path}: unreadable image (not a valid {path.suffix or 'image'} file, or larger than "
            f"{MAX_IMAGE_PIXELS // (1024 * 1024)} Mpx; supported: {', '.join(sorted(IMAGE_SUFFIXES))}){why}"
        )
    try:
        check_damage(path, said)
        check_size(path, pixels.shape[1], pixels.shape[0])
    except SourceError:
        pixels.fill(0)  # decoded, then refused: it held pixels all the same
        raise
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def check_damage(path: Path, said: list[str]) -> None:
    """SourceError when the decoder said it filled in part of the image (``DAMAGE_MESSAGES``)."""
    damage = next((line for line in said if line.startswith(DAMAGE_MESSAGES)), None)
    if damage is not None:
        raise SourceError(
            f"{path}: damaged image: the decoder said {damage!r} and filled in what it could not read"
        )


def check_size(path: Path, width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise SourceError(
            f"{path}: {width} x {height} pixels is too small to analyse "
            f"(width and height must be at least {MIN_SIDE})"
        )


def check_pixel_count(path: Path, width: int, height: int) -> None:
    """The images' limit for a video's frames too: FFmpeg has none, so the same JPEG named
    ``.mp4`` (an MJPEG frame), or an MJPEG AVI of 12000 x 9000 frames, was decoded whole
    (956 MB) where ``.jpg`` was refused (found by review)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise SourceError(
            f"{path}: its frames are {width} x {height} pixels, larger than "
            f"{MAX_IMAGE_PIXELS // (1024 * 1024)} Mpx (the limit for images and videos)"
        )


def check_video_file(path: Path) -> None:
    """A regular, readable, non-empty file, checked before FFmpeg opens it (a FIFO would hang)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{path}: not a video file: it is {file_kind(info.st_mode)}")
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if info.st_size == 0:
        raise SourceError(f"{path}: cannot decode the video: empty file (0 bytes)")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; SourceError when there are none."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from exc
    if not entries:
        try:
            others = sum(1 for _ in folder.iterdir())
        except OSError:
            others = 0
        what = "the folder is empty" if not others else f"{others} other file(s) or folder(s)"
        raise SourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it ({what})")
    return entries


def _capture(path: Path) -> cv2.VideoCapture:
    """FFmpeg on one decoding thread: each frame thread keeps frames of its own (3.4 MB more
    anonymous memory for ``analyze`` on the 1080p clip), and a replay is decoded a frame at a
    time for the stage anyway."""
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])


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
        self._count = 0  # frames read since open, handed out or turned away (grows across loop passes)
        self._pass_frames = 0  # frames read in this pass, handed out or turned away
        self._frame_count: int | None = None  # a video's own frame count, when it states one
        self.lost = 0
        """Frames that could not be decoded: broken images skipped, a video's missing tail."""
        self._start_mono: float | None = None
        self._ended = False
        self.mode = "unopened"
        self._pool = FramePool()
        self.scaled = scaled_copy(options.detector_side)
        """Makes each frame's copy for the detector (``Frame.lores``) when one was asked for."""
        self._stop = threading.Event()
        """Set by ``interrupt`` or ``close`` (from another thread): no wait, no decode after it."""

    @property
    def info(self) -> SourceInfo:
        w, h = self._size if self._size else (None, None)
        return SourceInfo(
            self.key, str(self.path), self._fps, w, h, live=False, lost=self.lost,
            **scaling_tally(self.scaled),
        )

    def open(self) -> None:
        quiet_decoder_logs()
        try:
            is_dir = stat.S_ISDIR(os.stat(self.path).st_mode)
        except FileNotFoundError:
            raise SourceError(f"{self.path}: no such file or folder") from None
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read the file: {exc.strerror or exc}") from None
        if is_dir:
            self._images = list_images(self.path)
            self.mode = "folder"
        elif self.path.suffix.lower() in IMAGE_SUFFIXES:
            self._images = [self.path]
            self.mode = "image"
        else:
            self.mode = "video"
            self._open_video()
        if self.mode != "video":
            first = self._first_image()  # fail now, not mid-stream
            self._size = (first.shape[1], first.shape[0])
            first.fill(0)
        logger.info(
            "replay source opened",
            extra={"fields": {"mode": self.mode, "fps": self._fps, "frames": len(self._images) or None}},
        )

    def _first_image(self) -> Pixels:
        """The first image that decodes; SourceError (the first one's) when none does."""
        first_error: SourceError | None = None
        for path in self._images:
            try:
                return decode_image(path)
            except SourceError as exc:
                first_error = first_error or exc
                if self.mode == "image":
                    raise
        raise SourceError(
            f"{self.path}: none of its {len(self._images)} images can be used; the first: {first_error}"
        )

    def _open_video(self) -> None:
        check_video_file(self.path)
        cap = _capture(self.path)
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
        try:
            check_pixel_count(self.path, *self._size)  # before a frame is decoded
        except SourceError:
            cap.release()
            raise
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._frame_count = int(count) if math.isfinite(count) and count > 0 else None
        ok, probe = cap.read()  # a container that opens but holds no decodable frame is corrupt
        cap.release()
        if not ok or probe is None:
            raise SourceError(f"{self.path}: cannot decode the video: no frame could be decoded")
        probe.fill(0)
        check_size(self.path, *self._size)
        self._cap = _capture(self.path)

    def read(self) -> Frame | None:
        """The next frame, decoded when it is due (never decoded and then left waiting), its
        lifetime starting the moment it leaves the decoder."""
        return self.read_wanted(every_frame)

    def read_wanted(self, wanted: Wanted) -> Frame | None:
        """As ``read``, asking ``wanted`` first. A video frame it turns away is grabbed (FFmpeg
        decodes it internally) and never converted to BGR. An image is read first, as before:
        only then is it known to be broken, and a broken one is counted and takes no turn; one
        turned away is zeroed at once."""
        while not self._ended:
            self._pace()
            if self._stop.is_set():
                return None
            source_time = self._count / self._fps
            pixels = self._next_pixels(wanted, source_time)
            if pixels is None:
                self._end_of_pass()
                if self.options.loop and self._pass_frames > 0:  # a pass with no frame would spin
                    self._rewind()
                    continue
                self._ended = True
                return None
            self._pos += 1
            self._count += 1
            self._pass_frames += 1
            if pixels is _PASSED_OVER:
                continue
            return decoded_frame(pixels, self._count - 1, self.clock, self.scaled, source_time)
        return None

    def _next_pixels(self, wanted: Wanted, source_time: float) -> Pixels | None:
        """The next frame's pixels, ``_PASSED_OVER`` when ``wanted`` turns it away, or None at
        the end of this pass (a video that cannot give its next frame, or no usable image left:
        each broken one counted and skipped, once per pass)."""
        if self.mode == "video":
            if self._cap is None or not self._cap.grab():
                return None
            if not wanted(source_time):
                return _PASSED_OVER
            return self._pool.retrieve(self._cap)
        while self._pos < len(self._images):
            try:
                pixels = decode_image(self._images[self._pos])
            except SourceError as exc:
                self.lost += 1
                self._pos += 1
                logger.warning("skipped an image that cannot be used: %s", exc)
                continue
            if wanted(source_time):
                return pixels
            zero(pixels)
            return _PASSED_OVER
        return None

    def _end_of_pass(self) -> None:
        """A video that stops short of its own frame count is damaged: say how much was lost."""
        expected = self._frame_count
        if self.mode != "video" or expected is None:
            return
        missing = expected - self._pass_frames
        if missing > LOST_TOLERANCE:
            self.lost += missing
            logger.warning(
                "%s: the video ended after %d of its %d frames: %d frames lost (corrupt or truncated)",
                self.path, self._pass_frames, expected, missing,
            )

    def _rewind(self) -> None:
        self._pos = 0
        self._pass_frames = 0
        if self.mode == "video":
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            check_video_file(self.path)  # as at open: a FIFO put in its place would hang FFmpeg
            self._cap = _capture(self.path)

    def _pace(self) -> None:
        """In real time, wait on the Clock until this frame is due (count / fps after the first);
        ``interrupt`` ends the wait (at ``camera.fps`` 0.1 an image waits 10 s, which closing
        the camera for privacy mode must not)."""
        if not self.options.realtime:
            return
        now = self.clock.monotonic()
        if self._start_mono is None:
            self._start_mono = now
            return
        due = self._start_mono + self._count / self._fps
        if due > now:
            self.clock.sleep_unless(due - now, self._stop)

    def interrupt(self) -> None:
        """Another thread is closing the source: end a paced wait now and decode nothing more."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pool.clear()
        if self.scaled is not None:
            self.scaled.close()
        self._ended = True
