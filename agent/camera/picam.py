"""The Raspberry Pi camera through picamera2 (libcamera), imported only when this source opens.

Uses picamera2's documented API: ``Picamera2(camera_num)``, ``create_video_configuration(main=
{"format": "RGB888", "size": (w, h)}, controls={"FrameDurationLimits": ...})``, ``configure``,
``start``, ``capture_request()``, ``MappedArray(request, "main", write=False)`` and
``request.release()``, ``stop``, ``close``. picamera2's "RGB888" is laid out B, G, R in memory:
the BGR order OpenCV and the vision stage expect.

The mapped buffer (libcamera's dma-buf, row padding sliced off) is copied once into the frame's
own array, and the request is released at once, so libcamera gets its buffer back before
inference starts. Not ``request.make_array``: for padded rows it copies the whole buffer, then
copies that without the padding, and frees the first copy with the pixels still in it. The
camera's own buffers are libcamera's (reused for the next frames, never written to disk); the
agent cannot zero them.
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
from agent.clock import Clock
from agent.errors import BackendUnavailable, CameraLost, SourceError
from agent.frame import Frame, Pixels

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
        try:
            config = cam.create_video_configuration(
                main={"format": "RGB888", "size": self._size},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                buffer_count=2,
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceError(f"picamera2:{self.camera_num}: cannot start the camera: {exc}") from exc
        self._cam = cam
        logger.info(
            "picamera2 started",
            extra={"fields": {"camera": self.camera_num, "size": f"{self._size[0]}x{self._size[1]}"}},
        )

    def read(self) -> Frame | None:
        if self._cam is None or self._mapped is None:
            raise CameraLost(f"picamera2:{self.camera_num}: read from a closed camera")
        try:
            request = self._cam.capture_request()
        except Exception as exc:
            raise CameraLost(f"picamera2:{self.camera_num}: capture failed: {exc}") from exc
        try:
            with self._mapped(request, "main", write=False) as mapped:
                pixels = self._copy(mapped.array)
        finally:
            request.release()
        frame = Frame(pixels, self._count, self.clock.monotonic(), self.clock.time())
        self._count += 1
        return frame

    def _copy(self, view: Any) -> Pixels:
        """The one copy of the camera's buffer: a writeable, contiguous array the lease zeroes."""
        shape = getattr(view, "shape", None)
        if shape is None or len(shape) != 3 or shape[2] != 3:
            raise CameraLost(
                f"picamera2:{self.camera_num}: expected an RGB888 (h, w, 3) buffer, got {shape}"
            )
        pixels: Pixels = np.empty(shape, np.uint8)
        np.copyto(pixels, view)
        return pixels

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()
