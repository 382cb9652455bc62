"""A BGR frame shrunk to the detector's letterbox size, as RGB: the one resize chain.

The detector runs it on the frame it is given; a file or OpenCV camera source runs the very
same chain in the thread that decodes (``agent.camera.scaled_copy``) and hands the result over
as ``Frame.lores``, so the analysis thread only normalises it. Both give the same bytes.

The chain's first steps halve exactly (a 2 x 2 mean: each output pixel reads only its own four
input pixels). Two or more of them in a row run band by band: a band of the frame's rows is
halved into a small band image, that one again, and so on down to the last of them, which is
written in full. The larger halvings never exist whole: for a 1080p frame their images would
be 1.9 MB (960 x 540 and 480 x 270), the bands are 0.3 MB; the bytes are the same
(``tests/vision/test_glue.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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


BAND_BYTES = 256 * 1024
"""About the size of the largest band image (the first halving's band) when halvings run band by
band: fewer bands cost more memory, more bands more calls into OpenCV (about 20 per 1080p frame
at this size)."""


def exact_halvings(frame_w: int, frame_h: int, steps: list[tuple[int, int]]) -> int:
    """How many of ``steps`` (``shrink_steps``), from the first, halve both sides exactly."""
    count, cw, ch = 0, frame_w, frame_h
    for w, h in steps:
        if (cw, ch) != (2 * w, 2 * h):
            break
        count, cw, ch = count + 1, w, h
    return count


@dataclass(frozen=True)
class _Plan:
    """How one frame size is shrunk: ``halvings`` leading exact halvings (0, or 2 and more)
    run ``band_rows`` rows of the last one's output at a time through ``bands`` (the earlier
    halvings' band images, largest first); ``steps`` are the images written whole: the last
    banded halving's output and every later step."""

    placement: Placement
    halvings: int
    band_rows: int
    bands: list[Pixels]
    steps: list[Pixels]


class Shrinker:
    """Frames of any size to the ``side`` x ``side`` letterbox's placement, RGB. One caller at
    a time uses its scratch images (a lock); ``shared`` gives the process's one per side."""

    def __init__(self, side: int) -> None:
        self.side = side
        self._lock = threading.Lock()
        self._plans: dict[tuple[int, int], _Plan] = {}
        """Per frame size: the placement and the chain's scratch images, worked out once."""
        self._buffers: dict[tuple[int, int], Pixels] = {}

    def placement(self, frame_w: int, frame_h: int) -> Placement:
        """Where a W x H frame goes in the input; (w, h) is the size ``shrink`` writes."""
        with self._lock:
            return self._plan(frame_w, frame_h).placement

    def _plan(self, frame_w: int, frame_h: int) -> _Plan:
        plan = self._plans.get((frame_w, frame_h))
        if plan is None:
            p = Placement.fit(frame_w, frame_h, self.side)
            sizes = shrink_steps(frame_w, frame_h, p.w, p.h)
            halvings = exact_halvings(frame_w, frame_h, sizes)
            if halvings < 2:  # one halving's output is needed whole anyway
                halvings = 0
            rows = 0
            bands: list[Pixels] = []
            if halvings:
                rows = min(max(1, BAND_BYTES // (sizes[0][0] * 3 << (halvings - 1))), sizes[halvings - 1][1])
                widths = [w for w, _ in sizes[: halvings - 1]]
                bands = [self._buffer(w, rows << (halvings - 1 - i)) for i, w in enumerate(widths)]
            steps = [self._buffer(w, h) for w, h in sizes[max(halvings - 1, 0) :]]
            plan = self._plans.setdefault((frame_w, frame_h), _Plan(p, halvings, rows, bands, steps))
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
            plan = self._plan(pixels.shape[1], pixels.shape[0])
            resized = pixels
            steps = plan.steps
            try:
                if plan.halvings:
                    resized = self._halve_in_bands(pixels, plan)
                    steps = steps[1:]
                for buf in steps:
                    cv2.resize(resized, (buf.shape[1], buf.shape[0]), dst=buf, interpolation=cv2.INTER_LINEAR)
                    resized = buf
                cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=rgb)
                return plan.placement
            finally:
                for buf in (*plan.bands, *plan.steps):
                    buf.fill(0)

    @staticmethod
    def _halve_in_bands(pixels: Pixels, plan: _Plan) -> Pixels:
        """The plan's leading halvings, ``band_rows`` output rows at a time: the same bytes as
        halving the whole image each time (each output pixel is the mean of its own 2 x 2 input
        pixels), without the larger images."""
        out = plan.steps[0]
        k = plan.halvings
        for top in range(0, out.shape[0], plan.band_rows):
            n = min(plan.band_rows, out.shape[0] - top)
            src = pixels[top << k : (top + n) << k]
            for i, band in enumerate(plan.bands):
                dst = band[: n << (k - 1 - i)]
                cv2.resize(src, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR)
                src = dst
            cv2.resize(src, (out.shape[1], n), dst=out[top : top + n], interpolation=cv2.INTER_LINEAR)
        return out

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
