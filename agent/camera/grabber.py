"""Between a camera and the consumer: at most one frame waits, the newest wins.

A live camera keeps producing whether or not inference keeps up. The grabber thread reads the
source continuously and puts each frame in a one-slot mailbox; a frame still waiting when a
newer one arrives is zeroed at once and counted as dropped, so the backlog is never more than
one frame and a slow consumer always gets the freshest picture. A file replayed as fast as
possible needs no thread: the consumer pulls and nothing is ever dropped.

An optional ``RateGate`` thins the stream to a wanted analysis rate (``--fps``); the frames it
turns away are counted as skipped. A source that can ask before it decodes (files, V4L2 and
network streams: ``SelectiveSource``) never converts them into pixels; from any other the frame
is zeroed at once. Asked first, the grabber also drops the frame still waiting in the slot
before the next one is decoded (it would be replaced anyway), so a consumer slower than the
rate costs two full-size frame buffers, not three.

Every frame that leaves the source is counted once as captured and once by its fate, where the
fate happens: dropped (replaced in the slot), skipped (the rate gate), discarded (zeroed unseen
because capture stopped: waiting in the slot at close, or read after close), or handed to the
consumer. ``tally()`` reads all the counters and the slot's occupancy at one instant, so
captured = dropped + skipped + discarded + taken + queued holds for every snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from agent.camera.base import FrameSource, Interruptible, SelectiveSource
from agent.errors import CameraLost, EmotionAgentError
from agent.frame import Frame
from agent.privacy.lease import zero_frame

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


@dataclass(frozen=True, slots=True)
class FrameTally:
    """A reader's counters at one instant (totals, except ``queued``: waiting right now)."""

    captured: int = 0
    dropped: int = 0
    skipped: int = 0
    discarded: int = 0
    queued: int = 0


class FrameReader(Protocol):
    """What the consumer sees: an iterator of frames plus counters for health and audit."""

    gate: RateGate
    """The frame-rate limit; replaced in place when a reload changes ``camera.fps``."""

    def tally(self) -> FrameTally: ...

    @property
    def captured(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class LatestFrameSlot:
    """A thread-safe mailbox holding at most one frame; ``put`` replaces and zeroes the old one.

    It also keeps the producer's counters, under the same lock as the frame, so a ``tally`` never
    sees a frame counted as captured but not yet anywhere."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._refusing = False
        self._error: BaseException | None = None
        self.captured = 0
        self.dropped = 0
        self.skipped = 0
        self.discarded = 0

    def put(self, frame: Frame) -> None:
        """A new frame from the source; after ``close`` it is zeroed at once (discarded)."""
        with self._cond:
            self.captured += 1
            if self._refusing:
                zero_frame(frame)
                self.discarded += 1
                return
            old, self._frame = self._frame, frame
            if old is not None:
                zero_frame(old)
                self.dropped += 1
            self._cond.notify()

    def pass_over(self) -> None:
        """A frame the rate gate turned away before it was decoded: counted, nothing to zero."""
        with self._cond:
            self.captured += 1
            self.skipped += 1

    def make_room(self) -> None:
        """The next frame is on its way: zero the waiting one now (dropped, as ``put`` would),
        so its buffer is free for the decode."""
        with self._cond:
            old, self._frame = self._frame, None
            if old is not None:
                zero_frame(old)
                self.dropped += 1

    def skip(self, frame: Frame) -> None:
        """A frame the rate gate turned away: counted and zeroed, never queued."""
        with self._cond:
            self.captured += 1
            self.skipped += 1
            zero_frame(frame)

    def finish(self, error: BaseException | None = None) -> None:
        """No more frames will come; ``error`` is re-raised to the consumer after the last frame."""
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Until a frame waits or no more will come (or ``timeout``), leaving it where it is;
        False when no frame waits and none will come."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            return self._frame is not None or not self._closed

    def take(self, timeout: float | None = None) -> Frame | None:
        """The waiting frame; None when finished and empty, or on timeout. Raises the producer's error."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def close(self) -> None:
        """The consumer is gone: zero the waiting frame and every frame that still arrives."""
        with self._cond:
            self._refusing = True
            if self._frame is not None:
                zero_frame(self._frame)
                self._frame = None
                self.discarded += 1
            self._cond.notify_all()

    def tally(self) -> FrameTally:
        with self._cond:
            queued = 1 if self._frame is not None else 0
            return FrameTally(self.captured, self.dropped, self.skipped, self.discarded, queued)


class PullReader:
    """Frames read in the consumer's thread, as fast as it asks: a replay at full speed, no drops."""

    def __init__(self, source: FrameSource, gate: RateGate | None = None) -> None:
        self.source = source
        self.gate = gate or RateGate(None)
        self.captured = 0
        self.dropped = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        source = self.source
        if isinstance(source, SelectiveSource):
            while (frame := source.read_wanted(self._wanted)) is not None:
                self.captured += 1
                yield frame
                del frame  # before the next read, so the decoder reuses its buffer (agent.camera.buffers)
            return
        while (frame := source.read()) is not None:
            self.captured += 1
            if not self.gate.admit(frame.stream_time):
                zero_frame(frame)
                self.skipped += 1
                continue
            yield frame
            del frame

    def _wanted(self, stream_time: float) -> bool:
        if self.gate.admit(stream_time):
            return True
        self.captured += 1
        self.skipped += 1
        return False

    def tally(self) -> FrameTally:
        """One thread reads and consumes: nothing ever waits, nothing is discarded."""
        return FrameTally(self.captured, self.dropped, self.skipped)

    def close(self) -> None:
        self.source.close()


class Grabber:
    """A reader thread feeding a one-frame mailbox; the consumer iterates the freshest frames.

    The thread owns the source while it reads: if ``close`` gives up waiting for a read that hangs
    (a stalled RTSP stream), the thread closes the source itself when the read returns, and the
    frame that read brought is zeroed at once, never queued."""

    def __init__(self, source: FrameSource, gate: RateGate | None = None) -> None:
        self.source = source
        self.gate = gate or RateGate(None)
        self.slot = LatestFrameSlot()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._finished = False
        self._close_on_exit = False
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)

    @property
    def captured(self) -> int:
        return self.slot.captured

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    @property
    def skipped(self) -> int:
        return self.slot.skipped

    def tally(self) -> FrameTally:
        return self.slot.tally()

    def start(self) -> Grabber:
        self._thread.start()
        return self

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            source = self.source
            selective = source if isinstance(source, SelectiveSource) else None
            while not self._stop.is_set():
                frame = selective.read_wanted(self._wanted) if selective is not None else source.read()
                if frame is None:
                    break
                if selective is not None or self.gate.admit(frame.stream_time):
                    self.slot.put(frame)
                else:
                    self.slot.skip(frame)
                # Not held while the next read waits and decodes: the consumer may be done with
                # it by then, and the decoder then reuses its buffer (agent.camera.buffers). Held,
                # a paced replay or a camera kept one more full-size buffer (6 MB at 1080p).
                del frame
        except EmotionAgentError as exc:
            error = exc
        except Exception as exc:  # a backend failure must reach the consumer, not die with the thread
            logger.exception("frame grabber failed")
            error = CameraLost(f"{self.source.info.name}: the source failed: {exc}")
            error.__cause__ = exc
        finally:
            self.slot.finish(error)
            with self._lock:
                self._finished = True
                close_source = self._close_on_exit
            if close_source:
                self._close_source()

    def _wanted(self, stream_time: float) -> bool:
        """Asked by a ``SelectiveSource`` before it converts a frame it has grabbed. The frame
        waiting in the slot is dropped then, not once the new one is out: a conversion that
        then fails (a camera dying between the two steps) leaves the slot empty, the waiting
        frame counted as dropped."""
        if self._stop.is_set():
            return True  # end the read: the frame is zeroed unseen by the closed slot
        if not self.gate.admit(stream_time):
            self.slot.pass_over()
            return False
        self.slot.make_room()
        return True

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.slot.take()) is not None:
            yield frame
            del frame  # not held while waiting for the next one (agent.camera.buffers)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the source has ended (files) or the grabber stopped; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading, zero any frame left waiting (and any that arrives later), release the
        source: now, or when a read still in progress returns."""
        self._stop.set()
        self.slot.close()
        if isinstance(self.source, Interruptible):
            self.source.interrupt()
        started = self._thread.ident is not None
        if started:
            self._thread.join(timeout)
        with self._lock:
            if started and not self._finished:
                self._close_on_exit = True
                logger.warning(
                    "the camera did not return from a read within %.0f s; it will be closed when it does",
                    timeout,
                )
                return
        self.source.close()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # the consumer may be gone: a failing close is logged, not raised
            logger.exception("closing the camera failed")


def start_reader(source: FrameSource, *, realtime: bool, fps: float | None = None) -> FrameReader:
    """Pull for a file replayed at full speed; a grabber thread for cameras and real-time replay."""
    gate = RateGate(fps)
    if not source.info.live and not realtime:
        return PullReader(source, gate)
    return Grabber(source, gate).start()
