"""The detector's copy of a frame, made in the thread that decodes it (``Frame.lores``).

A file or an OpenCV camera has no scaler of its own to ask (picamera2's ISP is one), so the
source runs the detector's own resize chain (``agent.vision.shrink``) right after the decode,
while the frame is still in the CPU cache. The detector then only normalises the copy: the
bytes it reads are the ones its own resize would have written. In ``run`` the grabber thread
decodes, so this work runs beside the analysis instead of in it; ``analyze`` and ``bench``
decode in the analysing thread, and ``bench`` reports the time it took (``seconds``).

When the route takes grey frames (``Frame.detector_read``'s third value: no tiles, no padded
stills), the source hands it the frame in grey beside the colour copy and zeroes the colour
frame at once: the emotion model reads grey crops, so the full-size colour image lives only
from the decode to here. The analysing thread then zeroes a third of the bytes and crops without
converting colour; the conversion runs where the scaling runs (in ``seconds``).

Privacy zones are blanked in the frame before it is scaled, so the copy is the detector's own
resize of the zoned frame: nothing inside a zone reaches it, whatever the filter's reach. The
route names its zones with each frame it analysed (``Frame.detector_read``) and reads a copy
only if it was made with those very zones (``Frame.lores_zones``).
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from agent.camera.buffers import FramePool
from agent.clock import Clock
from agent.frame import Frame, Pixels
from agent.privacy.lease import zero
from agent.privacy.zones import ZoneMask
from agent.vision.shrink import shared


class ScaledCopy:
    """Makes each frame's RGB copy at the detector's letterbox size; one per source."""

    def __init__(self, side: int) -> None:
        self._shrinker = shared(side)
        self._asked: tuple[int | None, ZoneMask | None, bool] = (side, None, False)
        """(side, zones, grey) from the last analysed frame (``detector_read``): no zones until a
        route says (a route with zones then reads no copy made before it said), colour frames
        until it says it takes grey ones."""
        self._greys = FramePool()
        self.frames = 0
        """Copies made."""
        self.seconds = 0.0
        """Wall time spent making them, blanking the zones included."""

    def detector_read(self, side: int | None, zones: object | None, grey: bool = False) -> None:
        """``Frame.detector_read``, called from the analysing thread: the side to scale to
        (None while the detector does not run: then no copy is made), the zones to blank
        first, and whether grey frames will do. One tuple is replaced whole, so the decoding
        thread never sees half of it."""
        self._asked = (side, zones if isinstance(zones, ZoneMask) else None, grey)

    def of(self, pixels: Pixels) -> tuple[Pixels | None, ZoneMask | None, Pixels]:
        """A new array (the frame owns it; its lease zeroes it) holding ``pixels`` with the
        zones blanked, shrunk; those zones; and the frame to hand out: ``pixels``, or when grey
        frames were asked for and a copy was made, a pooled grey one (``pixels`` then zeroed).
        No copy (None) while the detector is not running (it would be thrown away), or for a
        frame smaller than the letterbox, which the detector enlarges itself (the copy would
        save nothing)."""
        side, zones, grey = self._asked
        if side is None:
            return None, None, pixels
        if side != self._shrinker.side:  # a reload changed the detector
            self._shrinker = shared(side)
        p = self._shrinker.placement(pixels.shape[1], pixels.shape[0])
        if p.w > pixels.shape[1] or p.h > pixels.shape[0]:
            return None, None, pixels
        t0 = time.perf_counter()
        if zones is not None:
            zones.apply(pixels)
        rgb: Pixels = np.empty((p.h, p.w, 3), np.uint8)
        self._shrinker.shrink(pixels, rgb)
        shown = pixels
        if grey:
            shown = self._greys.buffer(pixels.shape[:2])
            cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY, dst=shown)
            zero(pixels)
        self.frames += 1
        self.seconds += time.perf_counter() - t0
        return rgb, zones, shown

    def close(self) -> None:
        """Zero and forget the grey buffers (the source closes)."""
        self._greys.clear()


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
    lores, zones, shown = copy.of(pixels)
    return Frame(
        shown, index, captured, stamp, source_time=source_time, lores=lores,
        cpu_scaled=lores is not None, lores_zones=zones, detector_read=copy.detector_read,
    )


def scaling_tally(copy: ScaledCopy | None) -> dict[str, Any]:
    """``SourceInfo``'s ``scaled`` and ``scaling_seconds`` for a source's ``ScaledCopy``."""
    if copy is None:
        return {}
    return {"scaled": copy.frames, "scaling_seconds": copy.seconds}
