"""Between a camera and the consumer: at most one frame waits, the newest wins.

A live camera keeps producing whether or not inference keeps up. The grabber thread reads the
source continuously and puts each frame in a one-slot mailbox; a frame still waiting when a
newer one arrives is zeroed at once and counted as dropped, so the backlog is never more than
one frame and a slow consumer always gets the freshest picture. A file replayed as fast as
possible needs no thread: the consumer pulls and nothing is ever dropped.

An optional ``RateGate`` thins the stream to a wanted analysis rate (``--fps``); the frames it
turns away are zeroed immediately and counted as skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Protocol

from agent.camera.base import FrameSource
from agent.errors import CameraLost, EmotionAgentError
from agent.frame import Frame
from agent.privacy.lease import zero

logger = logging.getLogger(__name__)


class RateGate:
    """Admit at most ``fps`` frames per second of stream time (pure logic, no clock of its own)."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError("fps must be positive")
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def admit(self, t: float) -> bool:
        """True when a frame at stream time ``t`` (seconds) is due for analysis."""
        if self.period == 0.0:
            return True
        if self._next is not None and t < self._next - 1e-6:
            return False
        # Keep to the grid when on time; restart the grid after a gap (a stall, a loop restart).
        on_grid = self._next is not None and t < self._next + self.period
        self._next = (self._next if on_grid and self._next is not None else t) + self.period
        return True


class FrameReader(Protocol):
    """What the consumer sees: an iterator of frames plus counters for health and audit."""

    @property
    def captured(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class LatestFrameSlot:
    """A thread-safe mailbox holding at most one frame; ``put`` replaces and zeroes the old one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            old, self._frame = self._frame, frame
            if old is not None:
                zero(old.pixels)
                self.dropped += 1
            self._cond.notify()

    def finish(self, error: BaseException | None = None) -> None:
        """No more frames will come; ``error`` is re-raised to the consumer after the last frame."""
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The waiting frame; None when finished and empty, or on timeout. Raises the producer's error."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def discard(self) -> None:
        """Zero a frame nobody will take (at shutdown)."""
        with self._cond:
            if self._frame is not None:
                zero(self._frame.pixels)
                self._frame = None


class PullReader:
    """Frames read in the consumer's thread, as fast as it asks: a replay at full speed, no drops."""

    def __init__(self, source: FrameSource, gate: RateGate | None = None) -> None:
        self.source = source
        self.gate = gate or RateGate(None)
        self.captured = 0
        self.dropped = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.source.read()) is not None:
            self.captured += 1
            if not self.gate.admit(frame.stream_time):
                zero(frame.pixels)
                self.skipped += 1
                continue
            yield frame

    def close(self) -> None:
        self.source.close()


class Grabber:
    """A reader thread feeding a one-frame mailbox; the consumer iterates the freshest frames."""

    def __init__(self, source: FrameSource, gate: RateGate | None = None) -> None:
        self.source = source
        self.gate = gate or RateGate(None)
        self.slot = LatestFrameSlot()
        self.captured = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def start(self) -> Grabber:
        self._thread.start()
        return self

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self.captured += 1
                if not self.gate.admit(frame.stream_time):
                    zero(frame.pixels)
                    self.skipped += 1
                    continue
                self.slot.put(frame)
        except EmotionAgentError as exc:
            error = exc
        except Exception as exc:  # a backend failure must reach the consumer, not die with the thread
            logger.exception("frame grabber failed")
            error = CameraLost(f"{self.source.info.name}: the source failed: {exc}")
            error.__cause__ = exc
        finally:
            self.slot.finish(error)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.slot.take()) is not None:
            yield frame

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the source has ended (files) or the grabber stopped; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading, zero any frame left waiting, release the source."""
        self._stop.set()
        self.slot.discard()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.slot.discard()
        self.source.close()


def start_reader(source: FrameSource, *, realtime: bool, fps: float | None = None) -> FrameReader:
    """Pull for a file replayed at full speed; a grabber thread for cameras and real-time replay."""
    gate = RateGate(fps)
    if not source.info.live and not realtime:
        return PullReader(source, gate)
    return Grabber(source, gate).start()
