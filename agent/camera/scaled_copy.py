"""The detector's copy of a frame, made in the thread that decodes it (``Frame.lores``).

A file or an OpenCV camera has no scaler of its own to ask (picamera2's ISP is one), so the
source runs the detector's own resize chain (``agent.vision.shrink``) right after the decode,
while the frame is still in the CPU cache. The detector then only normalises the copy: the
bytes it reads are the ones its own resize would have written. In ``run`` the grabber thread
decodes, so this work runs beside the analysis instead of in it; ``analyze`` and ``bench``
decode in the analysing thread, and ``bench`` reports the time it took (``seconds``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.frame import Pixels
from agent.vision.shrink import shared


class ScaledCopy:
    """Makes each frame's RGB copy at the detector's letterbox size; one per source."""

    def __init__(self, side: int) -> None:
        self._shrinker = shared(side)
        self._side: int | None = side
        """The side asked for by the last frame's analysis (``detector_read``)."""
        self.frames = 0
        """Copies made."""
        self.seconds = 0.0
        """Wall time spent making them."""

    def detector_read(self, side: int | None) -> None:
        """``Frame.detector_read``, called from the analysing thread: the side to scale to,
        or None while the detector does not run (then no copy is made)."""
        self._side = side

    def of(self, pixels: Pixels) -> Pixels | None:
        """A new array (the frame owns it; its lease zeroes it) holding ``pixels`` shrunk; None
        for a frame smaller than the letterbox, which the detector enlarges itself: the copy
        would save nothing, and privacy zones blank a copy's pixels by their footprint, which
        an enlarging filter reaches beyond (``agent.privacy.zones.covering_mask``). None as
        well while the detector is not running (``detector_read``): it would be thrown away."""
        side = self._side
        if side is None:
            return None
        if side != self._shrinker.side:  # a reload changed the detector
            self._shrinker = shared(side)
        t0 = time.perf_counter()
        p = self._shrinker.placement(pixels.shape[1], pixels.shape[0])
        if p.w > pixels.shape[1] or p.h > pixels.shape[0]:
            return None
        rgb: Pixels = np.empty((p.h, p.w, 3), np.uint8)
        self._shrinker.shrink(pixels, rgb)
        self.frames += 1
        self.seconds += time.perf_counter() - t0
        return rgb


def scaled_copy(side: int | None) -> ScaledCopy | None:
    """A ``ScaledCopy`` for ``SourceOptions.detector_side``, None when no detector asked."""
    return None if side is None else ScaledCopy(side)


def scaling_tally(copy: ScaledCopy | None) -> dict[str, Any]:
    """``SourceInfo``'s ``scaled`` and ``scaling_seconds`` for a source's ``ScaledCopy``."""
    if copy is None:
        return {}
    return {"scaled": copy.frames, "scaling_seconds": copy.seconds}
