"""Frame leases: pixels are usable only inside ``with lease(frame) as pixels:``.

Leaving the block, normally or by an exception, overwrites the buffer with zeros and records
the frame's lifetime (capture to zeroing). This is the code-level half of the promise that
pixels never outlive inference; the audit log carries the measured lifetimes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from agent.clock import Clock, SystemClock
from agent.frame import Frame, Pixels


@dataclass
class LifetimeStats:
    """Frame lifetimes (ms) since the last ``drain``: count, max and p99 for the audit log."""

    samples_ms: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms, default=0.0)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100); 0.0 when empty."""
        if not self.samples_ms:
            return 0.0
        ordered = sorted(self.samples_ms)
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]


class LifetimeRecorder:
    """Thread-safe collector of frame lifetimes; bounded, drained once per window."""

    def __init__(self, clock: Clock | None = None, max_samples: int = 100_000) -> None:
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._stats = LifetimeStats()
        self._max = max_samples
        self.total_zeroed = 0

    def record(self, lifetime_ms: float) -> None:
        with self._lock:
            self.total_zeroed += 1
            if len(self._stats.samples_ms) < self._max:
                self._stats.samples_ms.append(lifetime_ms)

    def drain(self) -> LifetimeStats:
        with self._lock:
            out, self._stats = self._stats, LifetimeStats()
        return out


def zero(pixels: Pixels) -> None:
    """Overwrite a buffer in place (a view shares memory, so its base is zeroed too)."""
    if pixels.flags.writeable:
        pixels.fill(0)
    else:  # a read-only view over a writeable base: zero the memory it looks at
        base = pixels.base
        while isinstance(base, np.ndarray) and not base.flags.writeable:
            base = base.base
        if not isinstance(base, np.ndarray):
            raise TypeError("cannot zero a read-only frame buffer; sources must hand out writeable arrays")
        base.fill(0)


def zero_frame(frame: Frame) -> None:
    """Zero every buffer of a frame: its pixels and the camera's scaled copy (``Frame.lores``)."""
    zero(frame.pixels)
    if frame.lores is not None:
        zero(frame.lores)


@contextmanager
def lease(frame: Frame, recorder: LifetimeRecorder | None = None) -> Iterator[Pixels]:
    """Lend a frame's pixels for one scope; zero them and record the lifetime on exit."""
    try:
        yield frame.pixels
    finally:
        zero_frame(frame)
        if recorder is not None:
            recorder.record((recorder.clock.monotonic() - frame.captured_mono) * 1000.0)
