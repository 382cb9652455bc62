"""A BGR frame shrunk to the detector's letterbox size, as RGB: the one resize chain.

The detector runs it on the frame it is given; a file or OpenCV camera source runs the very
same chain in the thread that decodes (``agent.camera.scaled_copy``) and hands the result over
as ``Frame.lores``, so the analysis thread only normalises it. Both give the same bytes.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from agent.frame import Pixels
from agent.vision.placement import Placement


def shrink_steps(frame_w: int, frame_h: int, w: int, h: int) -> list[tuple[int, int]]:
    """The sizes a W x H frame goes through to become w x h with little aliasing, cheaply
    (OpenCV's INTER_AREA is slow for non-integer ratios): halve (a 2 x 2 mean) while at least
    twice too big, bilinear to exactly 2w x 2h, and halve once more. Each step scales continuous
    coordinates by its own size ratio, so together they scale by exactly w / W and h / H.

    Measured on the group photo (docs/vision.md): plain bilinear or halving + bilinear lose the
    weakest of its six faces; this finds all six, at about twice the cost of halving + bilinear
    and a third of INTER_AREA's."""
    steps: list[tuple[int, int]] = []
    cw, ch = frame_w, frame_h
    while cw // 2 >= w and ch // 2 >= h:
        cw, ch = cw // 2, ch // 2
        steps.append((cw, ch))
    if (cw, ch) == (w, h):
        return steps
    if cw > w:  # between 1x and 2x too big: resample to 2x, then a 2 x 2 mean
        steps.append((2 * w, 2 * h))
    steps.append((w, h))
    return steps


class Shrinker:
    """Frames of any size to the ``side`` x ``side`` letterbox's placement, RGB. One caller at
    a time uses its scratch images (a lock); ``shared`` gives the process's one per side."""

    def __init__(self, side: int) -> None:
        self.side = side
        self._lock = threading.Lock()
        self._plans: dict[tuple[int, int], tuple[Placement, list[Pixels]]] = {}
        """Per frame size: the placement and the chain's scratch images, worked out once."""
        self._buffers: dict[tuple[int, int], Pixels] = {}

    def placement(self, frame_w: int, frame_h: int) -> Placement:
        """Where a W x H frame goes in the input; (w, h) is the size ``shrink`` writes."""
        with self._lock:
            return self._plan(frame_w, frame_h)[0]

    def _plan(self, frame_w: int, frame_h: int) -> tuple[Placement, list[Pixels]]:
        plan = self._plans.get((frame_w, frame_h))
        if plan is None:
            p = Placement.fit(frame_w, frame_h, self.side)
            steps = [self._buffer(w, h) for w, h in shrink_steps(frame_w, frame_h, p.w, p.h)]
            plan = self._plans.setdefault((frame_w, frame_h), (p, steps))
        return plan

    def _buffer(self, w: int, h: int) -> Pixels:
        """A scratch image of w x h, allocated once per size."""
        buf = self._buffers.get((w, h))
        if buf is None:
            buf = self._buffers.setdefault((w, h), np.zeros((h, w, 3), np.uint8))
        return buf

    def shrink(self, pixels: Pixels, rgb: Pixels) -> Placement:
        """Write ``pixels`` (BGR) shrunk to its placement's size into ``rgb`` (h x w x 3, RGB).
        Every scratch image is zeroed before returning, while it is still in the CPU cache;
        only ``rgb`` then holds pixels."""
        with self._lock:
            p, steps = self._plan(pixels.shape[1], pixels.shape[0])
            resized = pixels
            try:
                for buf in steps:
                    cv2.resize(resized, (buf.shape[1], buf.shape[0]), dst=buf, interpolation=cv2.INTER_LINEAR)
                    resized = buf
                cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=rgb)
                return p
            finally:
                for buf in steps:
                    buf.fill(0)

    def scratch(self) -> list[Pixels]:
        return list(self._buffers.values())


_SHARED: dict[int, Shrinker] = {}
_SHARED_LOCK = threading.Lock()


def shared(side: int) -> Shrinker:
    """The process's one ``Shrinker`` for ``side``: the detector (a frame without a copy) and
    the source that makes the copies use the same scratch images, which for a 1080p frame are
    2.2 MB (the first halving alone 1.5 MB), instead of one set each."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(side, Shrinker(side))
