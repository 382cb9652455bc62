"""The Raspberry Pi camera through picamera2 (libcamera), imported only when this source opens.

Uses picamera2's documented API: ``Picamera2(camera_num)``, ``create_video_configuration(main=
{"format": "RGB888", "size": (w, h)}, controls={"FrameDurationLimits": ...})``, ``configure``,
``start``, ``capture_request()``, ``MappedArray(request, "main", write=False)`` and
``request.release()``, ``stop``, ``close``. picamera2's "RGB888" is laid out B, G, R in memory:
the BGR order OpenCV and the vision stage expect.

With ``SourceOptions.detector_side`` set, a second stream, ``lores`` (YUV420, which the Pi 4's
ISP requires of it), is scaled by the ISP to the size the detector letterboxes the frame to and
handed over as ``Frame.lores`` (RGB), so the CPU never resizes the frame for the detector. The
configuration then asks for the SMPTE 170M colour space (BT.601 matrix, limited range), the one
OpenCV's YUV420 conversion decodes: picamera2's own default from 1280 x 720 up is Rec.709, which
decoded as BT.601 shifts every hue. A lores stream libcamera configured at another size or in
another colour space, or whose buffer is not the expected shape, is left unused (one log line)
and the detector resizes as without it.

The mapped buffer (libcamera's dma-buf, row padding sliced off) is copied once into the frame's
own array, and the request is released at once, so libcamera gets its buffer back before
inference starts. Not ``request.make_array``: for padded rows it copies the whole buffer, then
copies that without the padding, and frees the first copy with the pixels still in it. The
camera's own buffers are libcamera's (reused for the next frames, never written to disk); the
agent cannot zero them.

Grey frames (``agent.frame``): once the route says it takes them (``Frame.detector_read``) and
the lores stream is in use, that one copy is the main stream turned grey, straight from the
mapped buffer: the colour image is never copied out of libcamera's buffer, and the analysing
thread zeroes and crops a third of the bytes. The main stream's copies come from a ``FramePool``
and are reused once their frame is gone, as a decoder's are (the lores RGB is a new array per
frame; the lease zeroes both).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from agent.camera.base import SourceInfo, SourceOptions
from agent.camera.buffers import FramePool
from agent.clock import Clock
from agent.errors import BackendUnavailable, CameraLost, SourceError
from agent.frame import Frame, Pixels
from agent.vision.placement import Placement

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 720)
"""Large enough that a face 4-5 m away keeps ~40 px; the detector letterboxes it down anyway."""

INSTALL_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages, or use a /dev/videoN, URL or file source"
)


ABI_MARKERS = ("_ARRAY_API", "numpy.core.multiarray failed to import", "compiled using NumPy 1.x",
               "numpy.core._multiarray_umath")
"""What numpy says when a C extension built for another numpy ABI is loaded (picamera2 #1088)."""


def numpy_abi_mismatch(exc: BaseException, numpy_version: str) -> str | None:
    """The installer's fix when ``exc`` (or its chain) is numpy refusing an extension's ABI, else None.

    apt's picamera2 pulls C extensions built against Bookworm's numpy 1.24; a numpy 2 in the venv
    makes them fail with ``AttributeError: _ARRAY_API not found`` or an ImportError, not with a
    missing module, so the plain install hint would mislead.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if any(marker in str(seen) for marker in ABI_MARKERS):
            return (
                f"picamera2 is installed but cannot load: apt's C extensions were built for numpy 1.x "
                f"and this venv has numpy {numpy_version} ({type(seen).__name__}: {seen}); reinstall with "
                "tools/install, which pins numpy<2 on Bookworm (constraints/bookworm.txt), or run "
                "`sudo /opt/emotion-agent/venv/bin/pip install "
                "-c /opt/emotion-agent/share/constraints.txt 'numpy<2'`"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def import_picamera2() -> ModuleType:
    """Import picamera2 now (never at agent import: it probes libcamera when imported).

    numpy prints its own multi-line warning and traceback to stderr when an extension's ABI does
    not match; it is kept for ``--log-level DEBUG`` and replaced by one line saying what to do.
    """
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter):
            return importlib.import_module("picamera2")
    except (ImportError, AttributeError) as exc:
        fix = numpy_abi_mismatch(exc, np.__version__)
        if fix is not None:
            raise BackendUnavailable(fix) from exc
        if isinstance(exc, ImportError):
            raise BackendUnavailable(INSTALL_HINT) from exc
        raise
    finally:
        if chatter.getvalue():
            logger.debug("picamera2 import wrote to stderr: %s", chatter.getvalue())


class Picamera2Source:
    """A CSI camera (Camera Module 2/3, HQ, ...) on a Raspberry Pi."""

    key: ClassVar[str] = "picamera2"

    def __init__(
        self, target: str, options: SourceOptions, clock: Clock, module: ModuleType | None = None
    ) -> None:
        self.camera_num = int(target or 0)
        self.options = options
        self.clock = clock
        self._module = module
        self._cam: Any = None
        self._mapped: Any = None
        self._size = (options.width or DEFAULT_SIZE[0], options.height or DEFAULT_SIZE[1])
        self._count = 0
        self._lores: tuple[int, int] | None = None
        """(w, h) of the lores stream in use, None when there is none."""
        self._grey = False
        """The route takes grey frames (``detector_read``); used only beside a lores copy."""
        self._pool = FramePool()

    def detector_read(self, side: int | None, zones: object | None, grey: bool = False) -> None:
        """``Frame.detector_read``, from the analysing thread. Only ``grey`` matters here: the
        ISP scales every frame from the raw image (the side is fixed when the camera opens) and
        the route blanks its zones in both copies itself."""
        self._grey = grey

    @property
    def info(self) -> SourceInfo:
        w, h = self._size
        return SourceInfo(self.key, f"picamera2:{self.camera_num}", self.options.fps, w, h, live=True)

    def open(self) -> None:
        module = self._module or import_picamera2()
        cls = module.Picamera2
        self._mapped = module.MappedArray
        cameras = cls.global_camera_info()
        if self.camera_num >= len(cameras):
            raise SourceError(
                f"picamera2:{self.camera_num}: no such camera ({len(cameras)} attached); check the "
                "ribbon cable and `rpicam-hello --list-cameras`"
            )
        frame_us = round(1_000_000 / self.options.fps)
        try:
            cam = cls(self.camera_num)
        except (RuntimeError, OSError) as exc:
            raise SourceError(
                f"picamera2:{self.camera_num}: cannot acquire the camera (in use by another "
                f"program?): {exc}"
            ) from exc
        lores = self._lores_size()
        space = None if lores is None else bt601_colour_space(module)
        if space is None:
            lores = None
        try:
            config = cam.create_video_configuration(
                main={"format": "RGB888", "size": self._size},
                lores=None if lores is None else {"format": "YUV420", "size": lores},
                colour_space=space,
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                buffer_count=2,
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceError(f"picamera2:{self.camera_num}: cannot start the camera: {exc}") from exc
        self._cam = cam
        self._lores = self._configured_lores(cam, lores, space)
        logger.info(
            "picamera2 started",
            extra={"fields": {"camera": self.camera_num, "size": f"{self._size[0]}x{self._size[1]}"}},
        )

    def read(self) -> Frame | None:
        if self._cam is None or self._mapped is None:
            raise CameraLost(f"picamera2:{self.camera_num}: read from a closed camera")
        wait = capture_timeout(self.options.fps)
        try:
            request = self._cam.capture_request(wait=wait)
        except TimeoutError as exc:
            self._cam.cancel_all_and_flush()  # so that the camera can be stopped and closed
            raise CameraLost(
                f"picamera2:{self.camera_num}: no frame for {wait:.0f} s (the camera stopped "
                "delivering: check the ribbon cable and `rpicam-hello --list-cameras`)"
            ) from exc
        except Exception as exc:
            raise CameraLost(f"picamera2:{self.camera_num}: capture failed: {exc}") from exc
        # The lifetime starts before the copies are made (they hold the pixels from then on),
        # as a decoding source's does (agent.camera.scaled_copy.decoded_frame).
        captured, stamp = self.clock.monotonic(), self.clock.time()
        pixels, lores = self._copies(request)
        frame = Frame(pixels, self._count, captured, stamp, lores=lores, detector_read=self.detector_read)
        self._count += 1
        return frame

    def _copies(self, request: Any) -> tuple[Pixels, Pixels | None]:
        """The frame's copy (grey when the route takes grey frames and the lores RGB was made,
        so the lores copy is read first) and its lores RGB, the request released; if anything
        fails on the way, the release included (libcamera refuses to queue a request again once
        the camera is gone), the copies already made are zeroed before the error leaves."""
        made: list[Pixels] = []
        try:
            try:
                lores = None
                if self._lores is not None and (lores := self._read_lores(request, self._lores)) is not None:
                    made.append(lores)
                with self._mapped(request, "main", write=False) as mapped:
                    made.append(self._copy(mapped.array, grey=self._grey and lores is not None))
            finally:
                refused = _release(request)
        except BaseException:
            _zero_all(made)
            raise
        if refused is not None:
            _zero_all(made)
            raise CameraLost(
                f"picamera2:{self.camera_num}: the camera refused its buffer back: {refused}"
            ) from refused
        return made[-1], lores

    def _read_lores(self, request: Any, size: tuple[int, int]) -> Pixels | None:
        """The request's lores copy as RGB; a failure there (the stream missing, a mapping
        error) is logged once and the stream left unused, not a lost camera: the frame itself
        is fine and the detector resizes it."""
        try:
            with self._mapped(request, "lores", write=False) as mapped:
                return self._lores_rgb(mapped.array, size)
        except Exception as exc:
            logger.warning(
                "picamera2 lores stream left unused: %s: %s", type(exc).__name__, exc,
                extra={"fields": {"camera": self.camera_num}},
            )
            self._lores = None
            return None

    def _lores_size(self) -> tuple[int, int] | None:
        """The detector's letterbox size for the main stream, when it is even (YUV420) and
        no larger than the main stream; else None (no lores stream, one log line)."""
        if self.options.detector_side is None:
            return None
        p = Placement.fit(*self._size, self.options.detector_side)
        if p.w % 2 or p.h % 2 or p.w > self._size[0] or p.h > self._size[1]:
            logger.info(
                "picamera2 lores stream not used: the detector's %dx%d for a %dx%d frame is odd "
                "or larger than the frame (YUV420 needs even sizes)",
                p.w, p.h, *self._size, extra={"fields": {"camera": self.camera_num}},
            )
            return None
        return p.w, p.h

    def _configured_lores(
        self, cam: Any, asked: tuple[int, int] | None, space: Any = None
    ) -> tuple[int, int] | None:
        """The lores size in use: the one asked for, if libcamera kept it and kept the main
        stream's size it was worked out from (it may align either), and kept the colour space
        the conversion decodes."""
        if asked is None or self.options.detector_side is None:
            return None
        config = getattr(cam, "camera_config", None) or {}
        got_space = config.get("colour_space")
        if got_space != space:
            logger.info(
                "picamera2 lores stream not used: its YUV420 must be in the SMPTE 170M colour "
                "space (BT.601, limited range), the camera chose %s",
                got_space, extra={"fields": {"camera": self.camera_num}},
            )
            return None
        got = tuple((config.get("lores") or {}).get("size") or ())
        main = tuple((config.get("main") or {}).get("size") or self._size)
        p = Placement.fit(int(main[0]), int(main[1]), self.options.detector_side)
        if got != asked or (p.w, p.h) != asked:
            logger.info(
                "picamera2 lores stream not used: the detector needs %sx%s of a %s frame, the "
                "camera gave %s",
                p.w, p.h, "x".join(map(str, main)), "x".join(map(str, got)) or "none",
                extra={"fields": {"camera": self.camera_num}},
            )
            return None
        return asked

    def _lores_rgb(self, view: Any, size: tuple[int, int]) -> Pixels | None:
        """The lores YUV420 buffer as an RGB image (the frame's ``lores``), or None, once
        logged, when its shape is not the (h * 3 / 2, stride >= w) picamera2 hands out."""
        w, h = size
        shape = getattr(view, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != h * 3 // 2 or shape[1] < w:
            logger.warning(
                "picamera2 lores buffer has shape %s, expected (%d, >=%d): lores stream left unused",
                shape, h * 3 // 2, w, extra={"fields": {"camera": self.camera_num}},
            )
            self._lores = None
            return None
        return yuv420_to_rgb(view, w, h)

    def _copy(self, view: Any, grey: bool = False) -> Pixels:
        """The one copy of the camera's buffer, into a pooled array the lease zeroes: the BGR
        pixels, or with ``grey`` their grey, converted from the mapped buffer in one pass."""
        shape = getattr(view, "shape", None)
        if shape is None or len(shape) != 3 or shape[2] != 3:
            raise CameraLost(
                f"picamera2:{self.camera_num}: expected an RGB888 (h, w, 3) buffer, got {shape}"
            )
        pixels = self._pool.buffer(tuple(shape) if not grey else tuple(shape[:2]))
        try:
            if not grey:
                np.copyto(pixels, view)
            else:
                import cv2  # noqa: PLC0415 - the camera layer imports OpenCV only where it converts

                cv2.cvtColor(view, cv2.COLOR_BGR2GRAY, dst=pixels)
        except BaseException:  # half written: the caller never gets it to zero
            pixels.fill(0)
            raise
        return pixels

    def close(self) -> None:
        cam, self._cam = self._cam, None
        self._pool.clear()
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()


CAPTURE_TIMEOUT_S = 3.0
"""Shortest wait for a frame before the camera counts as lost. picamera2 waits for ever by
default, and a camera whose ribbon cable came loose never completes a request (libcamera logs
"Camera frontend has timed out!"), so the feed would never notice or reopen it."""


def capture_timeout(fps: float) -> float:
    """Seconds to wait for one frame: ``CAPTURE_TIMEOUT_S``, or four frame intervals at a low rate."""
    return max(CAPTURE_TIMEOUT_S, 4.0 / fps) if fps > 0 else CAPTURE_TIMEOUT_S


def _zero_all(copies: list[Pixels]) -> None:
    for copy in copies:
        copy.fill(0)


def _release(request: Any) -> Exception | None:
    """Give a request back to picamera2; the error instead of raising it."""
    try:
        request.release()
    except Exception as exc:
        return exc
    return None


def bt601_colour_space(module: ModuleType) -> Any:
    """libcamera's ``ColorSpace.Smpte170m()`` (BT.601, limited range), from the ``libcamera``
    module picamera2 imports; None, logged, if it cannot be had (then no lores stream)."""
    try:
        libcamera = getattr(module, "libcamera", None) or importlib.import_module("libcamera")
        return libcamera.ColorSpace.Smpte170m()
    except (ImportError, AttributeError) as exc:
        logger.info("picamera2 lores stream not used: no libcamera ColorSpace.Smpte170m (%s)", exc)
        return None


def yuv420_to_rgb(yuv: Any, w: int, h: int) -> Pixels:
    """An I420 buffer as picamera2 maps it, (h * 3 / 2, stride) with each plane's rows padded to
    the stride (U and V rows to half of it), as a new RGB (h, w, 3) image; zeroed again if the
    conversion fails half way."""
    rgb: Pixels = np.zeros((h, w, 3), np.uint8)
    try:
        _i420_to_rgb(np.asarray(yuv), w, h, rgb)
    except BaseException:
        rgb.fill(0)
        raise
    return rgb


def _i420_to_rgb(yuv: Any, w: int, h: int, rgb: Pixels) -> None:
    """A padded buffer is first packed into a plain I420 copy, zeroed before returning. Each
    plane's rows are copied into it in place: flattening a plane's sliced rows would make a
    temporary copy of it, freed unzeroed."""
    import cv2  # noqa: PLC0415 - the camera layer imports OpenCV only where it converts

    stride = int(yuv.shape[1])
    if stride == w:
        cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420, dst=rgb)
        return
    flat = yuv.reshape(-1)
    half, qh = stride // 2, h // 2
    packed = np.zeros((h * 3 // 2, w), np.uint8)
    try:
        packed[:h] = flat[: h * stride].reshape(h, stride)[:, :w]
        chroma = packed[h:].reshape(-1)
        for k in range(2):
            start = h * stride + k * qh * half
            plane = flat[start : start + qh * half].reshape(qh, half)[:, : w // 2]
            chroma[k * qh * (w // 2) : (k + 1) * qh * (w // 2)].reshape(qh, w // 2)[...] = plane
        cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420, dst=rgb)
    finally:
        packed.fill(0)
