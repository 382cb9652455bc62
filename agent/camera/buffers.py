"""Decode into frame buffers that are reused once nobody holds them any more.

``cv2.VideoCapture.read()`` allocates a new array for every frame. At 1080p that is 6 MB per
frame, which glibc serves from its heap once its mmap threshold has grown past the frame's
size, and freed frames then stay in the heap: decoding the 1080p demo clip alone raised the
peak RSS by 47 MB, 15 MB of it from this churn (docs/vision.md, "Memory").

A ``FramePool`` hands the decoder a buffer that no frame holds any more, so the same few
buffers carry every frame. A buffer is free when only the pool refers to it: the frame that
carried it has been dropped (its lease zeroed it first). A consumer that keeps a frame keeps
its buffer: the pool then decodes into another one, never into pixels someone still holds.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import numpy as np

from agent.frame import Pixels

POOL_SIZE = 3
"""The decoder's frame, one waiting in the grabber's slot, one being analysed. A source that asks
before it decodes (``agent.camera.base.SelectiveSource``) needs two: the grabber then drops the
waiting frame before the next one is decoded, not after."""


class Capture(Protocol):
    """What the pool needs of ``cv2.VideoCapture``: ``grab`` reads and decodes the next frame
    inside FFmpeg or the driver, ``retrieve`` converts it into a BGR array (into ``image`` when
    that fits)."""

    def grab(self) -> bool: ...

    def retrieve(self, image: Any = ...) -> tuple[bool, Any]: ...


class FramePool:
    """Up to ``size`` decode buffers, each reused once its last frame is gone."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self._buffers: list[Pixels] = []

    def free_buffer(self) -> Pixels | None:
        """A buffer no frame holds any more, or None (then the decoder allocates one)."""
        for buf in self._buffers:
            # references: the list, the loop variable and getrefcount's own argument
            if sys.getrefcount(buf) <= 3:
                return buf
        return None

    def read(self, capture: Capture) -> Pixels | None:
        """The capture's next frame (None at its end): ``grab`` then ``retrieve``."""
        return self.retrieve(capture) if capture.grab() else None

    def retrieve(self, capture: Capture) -> Pixels | None:
        """The frame the capture grabbed last, in a pooled buffer when one was free and the
        frame fits it, else in a new one that joins the pool while there is room."""
        buf = self.free_buffer()
        ok, pixels = capture.retrieve() if buf is None else capture.retrieve(buf)
        if not ok or pixels is None:
            return None
        if buf is not None and pixels is buf:
            return buf
        out = np.ascontiguousarray(pixels, dtype=np.uint8)
        if buf is not None and buf.shape != out.shape:  # the stream changed size: start over
            self._buffers = [b for b in self._buffers if b is not buf]
        if len(self._buffers) < self.size:
            self._buffers.append(out)
        return out

    def buffer(self, shape: tuple[int, ...]) -> Pixels:
        """A free buffer of ``shape``, else a new one that joins the pool while there is room
        (a free one of another size leaves it)."""
        buf = self.free_buffer()
        if buf is not None and buf.shape == shape:
            return buf
        if buf is not None:  # zeroed by its frame's lease already; again, as it leaves
            buf.fill(0)
            self._buffers = [b for b in self._buffers if b is not buf]
        out: Pixels = np.empty(shape, np.uint8)
        if len(self._buffers) < self.size:
            self._buffers.append(out)
        return out

    def clear(self) -> None:
        """Zero and forget every buffer (the source closes)."""
        for buf in self._buffers:
            buf.fill(0)
        self._buffers.clear()
