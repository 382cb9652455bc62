"""Time as an injectable dependency, so a test of a 60 s window runs in milliseconds."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time for timestamps and windows, monotonic time for durations."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait; a fake clock advances instead."""
        ...

    def sleep_unless(self, seconds: float, stop: threading.Event) -> None:
        """``sleep``, ended early when another thread sets ``stop`` (closing a paced replay)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def sleep_unless(self, seconds: float, stop: threading.Event) -> None:
        if seconds > 0:
            stop.wait(seconds)


class FakeClock:
    """A clock that moves only when told to; ``sleep`` advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def sleep_unless(self, seconds: float, stop: threading.Event) -> None:
        if not stop.is_set():
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._wall += seconds
        self._mono += seconds

    def set_wall(self, t: float) -> None:
        """The wall clock set (NTP answering, an administrator): monotonic time does not move."""
        self._wall = t
