"""The detector's copy of a frame, made in the thread that decodes it (``Frame.lores``).

A file or an OpenCV camera has no scaler of its own to ask (picamera2's ISP is one), so the
source runs the detector's own resize chain (``agent.vision.shrink``) right after the decode,
while the frame is still in the CPU cache. The detector then only normalises the copy: the
bytes it reads are the ones its own resize would have written. In ``run`` the grabber thread
decodes, so this work runs beside the analysis instead of in it; ``analyze`` and ``bench``
decode in the analysing thread, and ``bench`` reports the time it took (``seconds``).

Privacy zones are blanked in the frame before it is scaled, so the copy is the detector's own
resize of the zoned frame: nothing inside a zone reaches it, whatever the filter's reach. The
route names its zones with each frame it analysed (``Frame.detector_read``) and reads a copy
only if it was made with those very zones (``Frame.lores_zones``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.clock import Clock
from agent.frame import Frame, Pixels
from agent.privacy.zones import ZoneMask
from agent.vision.shrink import shared


class ScaledCopy:
    """Makes each frame's RGB copy at the detector's letterbox size; one per source."""

    def __init__(self, side: int) -> None:
        self._shrinker = shared(side)
        self._asked: tuple[int | None, ZoneMask | None] = (side, None)
        """(side, zones) from the last analysed frame (``detector_read``): no zones until a
        route says (a route with zones then reads no copy made before it said)."""
        self.frames = 0
        """Copies made."""
        self.seconds = 0.0
        """Wall time spent making them, blanking the zones included."""

    def detector_read(self, side: int | None, zones: object | None) -> None:
        """``Frame.detector_read``, called from the analysing thread: the side to scale to
        (None while the detector does not run: then no copy is made) and the zones to blank
        first. One tuple is replaced whole, so the decoding thread never sees half of it."""
        self._asked = (side, zones if isinstance(zones, ZoneMask) else None)

    def of(self, pixels: Pixels) -> tuple[Pixels | None, ZoneMask | None]:
        """A new array (the frame owns it; its lease zeroes it) holding ``pixels`` with the
        zones blanked, shrunk; and those zones. No copy (None) while the detector is not
        running (it would be thrown away), or for a frame smaller than the letterbox, which the
        detector enlarges itself (the copy would save nothing)."""
        side, zones = self._asked
        if side is None:
            return None, None
        if side != self._shrinker.side:  # a reload changed the detector
            self._shrinker = shared(side)
        p = self._shrinker.placement(pixels.shape[1], pixels.shape[0])
        if p.w > pixels.shape[1] or p.h > pixels.shape[0]:
            return None, None
        t0 = time.perf_counter()
        if zones is not None:
            zones.apply(pixels)
        rgb: Pixels = np.empty((p.h, p.w, 3), np.uint8)
        self._shrinker.shrink(pixels, rgb)
        self.frames += 1
        self.seconds += time.perf_counter() - t0
        return rgb, zones


def scaled_copy(side: int | None) -> ScaledCopy | None:
    """A ``ScaledCopy`` for ``SourceOptions.detector_side``, None when no detector asked."""
    return None if side is None else ScaledCopy(side)


def decoded_frame(
    pixels: Pixels, index: int, clock: Clock, copy: ScaledCopy | None, source_time: float | None = None
) -> Frame:
    """The frame a decoding source hands out, with the detector's copy when one is wanted.
    Its lifetime starts before the copy is made, so the copy's time counts in it."""
    captured, stamp = clock.monotonic(), clock.time()
    if copy is None:
        return Frame(pixels, index, captured, stamp, source_time=source_time)
    lores, zones = copy.of(pixels)
    return Frame(
        pixels, index, captured, stamp, source_time=source_time, lores=lores,
        cpu_scaled=lores is not None, lores_zones=zones, detector_read=copy.detector_read,
    )


def scaling_tally(copy: ScaledCopy | None) -> dict[str, Any]:
    """``SourceInfo``'s ``scaled`` and ``scaling_seconds`` for a source's ``ScaledCopy``."""
    if copy is None:
        return {}
    return {"scaled": copy.frames, "scaling_seconds": copy.seconds}
