"""The service's camera: open on demand, reconnect with backoff, never crash the loop.

A camera that fails to open or dies mid-stream is closed, its state becomes ``reconnecting``
and the next attempt waits 1, 2, 4, ... seconds up to ``max_backoff``. A file source that ends
(and does not loop) reports ``ended`` so the service can flush its window and exit. A file that
cannot be used (InputError: missing, not media, unreadable) is not retried: the error goes to
the caller, since reopening it would fail again or replay it from the start. The feed is
``Switchable`` for the capture gate: ``close()`` releases the device, not merely the frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from agent.camera.base import FrameSource, SourceOptions, open_source, resolve
from agent.camera.grabber import FrameReader, FrameTally, Grabber, RateGate, start_reader
from agent.clock import Clock
from agent.errors import InputError, SourceError
from agent.frame import Frame

logger = logging.getLogger(__name__)

SourceOpener = Callable[[str, SourceOptions, Clock], FrameSource]
"""Builds and opens a source (``open_source``, or a test double)."""


class CameraState(StrEnum):
    CLOSED = "closed"
    UP = "up"
    RECONNECTING = "reconnecting"
    ENDED = "ended"


@dataclass
class FeedCounters:
    """Running totals (``queued``: waiting right now); the service turns them into per-window
    deltas. A frame a hung camera delivers after its reader was released is zeroed by that reader
    and counted nowhere here: neither captured nor discarded."""

    captured: int = 0
    dropped: int = 0
    skipped: int = 0
    failures: int = 0
    discarded: int = 0
    queued: int = 0


class CameraFeed:
    """One camera or file, opened and re-opened as the service needs it."""

    def __init__(
        self,
        source: str,
        options: SourceOptions,
        clock: Clock,
        *,
        max_backoff: float = 60.0,
        opener: SourceOpener = open_source,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.options = options
        self.clock = clock
        self.max_backoff = max_backoff
        self._opener = opener
        self._on_failure = on_failure
        self._reader: FrameReader | None = None
        self._source: FrameSource | None = None
        self._frames: Iterator[Frame] | None = None
        self._staged: tuple[str, FrameSource] | None = None
        self._lost = 0
        self._wanted = False
        self._retry_at = 0.0
        self._backoff = 1.0
        self._base = FeedCounters()
        self.state = CameraState.CLOSED
        self.live = True

    # --- Switchable, for the capture gate ----------------------------------------------------

    def open(self) -> None:
        self._wanted = True
        if self._reader is None and self.state is not CameraState.ENDED:
            self._connect()

    def close(self) -> None:
        self._wanted = False
        self._drop_staged()
        self._release()
        if self.state is not CameraState.ENDED:
            self.state = CameraState.CLOSED

    def retarget(self, source: str, options: SourceOptions) -> None:
        """A reloaded ``camera`` section: release the current source and, if capture is wanted,
        open the new one on the next ``next_frame`` (an ended file starts over)."""
        self._release()
        self.source, self.options = source, options
        self.state = CameraState.CLOSED
        self._retry_at, self._backoff = 0.0, 1.0

    def check(self, source: str, options: SourceOptions) -> None:
        """Open a file a reload wants, so one that cannot be used (InputError) is refused while
        the running source is still there; the opened file is the one ``retarget`` then reads.
        A live camera is not tried: it may be the device the feed holds, and one that does not
        open is a reconnecting state, not a bad config."""
        self._drop_staged()
        try:
            if resolve(source)[0] != "replay":
                return
            src = self._opener(source, options, self.clock)
        except InputError as exc:
            raise SourceError(f"camera.source {exc}") from None
        if self._wanted:
            self._staged = (source, src)
        else:  # capture is off (privacy mode): nothing stays open
            src.close()

    def retune(self, options: SourceOptions) -> None:
        """A reload that keeps the source: a file is not reopened (it would start over and its
        windows come again); the new frame rate applies now, the other options at the next open."""
        self.options = options
        if self._reader is not None:
            self._reader.gate = RateGate(options.fps)

    # --- frames --------------------------------------------------------------------------------

    def next_frame(self, timeout: float = 0.5) -> Frame | None:
        """The next frame, or None (closed, ended, waiting to reconnect, or nothing yet)."""
        if not self._wanted or self.state is CameraState.ENDED:
            return None
        if self._reader is None:
            if self.clock.monotonic() < self._retry_at:
                return None
            self._connect()
            if self._reader is None:
                return None
        try:
            frame = self._take(timeout)
        except InputError as exc:
            if self.is_file:  # e.g. the file vanished: replaying it from the start would not help
                self._release()
                raise
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:  # a camera failure must never stop the service
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        if frame is not None:
            self._backoff = 1.0
        return frame

    @property
    def counters(self) -> FeedCounters:
        """Totals since start, read from the open reader at one instant."""
        t = self._reader.tally() if self._reader is not None else FrameTally()
        return FeedCounters(
            captured=self._base.captured + t.captured,
            dropped=self._base.dropped + t.dropped,
            skipped=self._base.skipped + t.skipped,
            failures=self._base.failures,
            discarded=self._base.discarded + t.discarded,
            queued=t.queued,
        )

    def wait_for_frame(self, timeout: float) -> None:
        """Wait, up to ``timeout``, until a camera's next frame waits to be taken, without taking
        it: the loop then does its other work at the camera's pace, with no frame in hand (at
        once for a file read on demand, or while no camera is open). A camera whose grabber
        ended (it failed) is waited for all the same: the turn that finds it gone would
        otherwise run right after the last inference, and what it signs time that inference."""
        reader = self._reader
        if isinstance(reader, Grabber):
            deadline = self.clock.monotonic() + timeout
            if not reader.slot.wait(timeout):
                self.clock.sleep(max(0.0, deadline - self.clock.monotonic()))

    def wait_hint(self) -> float:
        """Seconds until the next reconnect attempt (0 when a reader is open)."""
        if self._reader is not None:
            return 0.0
        return max(0.0, self._retry_at - self.clock.monotonic())

    # --- internals -----------------------------------------------------------------------------

    def _take(self, timeout: float) -> Frame | None:
        reader = self._reader
        if isinstance(reader, Grabber):
            frame = reader.slot.take(timeout)
            if frame is None and reader.join(0):
                frame = reader.slot.take(0)  # the last frame may land as the thread ends
                if frame is None:
                    self._ended()
            return frame
        assert self._frames is not None  # noqa: S101 - set with the reader
        try:
            return next(self._frames)
        except StopIteration:
            self._ended()
            return None

    def _connect(self) -> None:
        try:
            src = self._take_staged() or self._opener(self.source, self.options, self.clock)
            self.live = src.info.live
            self._source = src
            self._reader = start_reader(src, realtime=self.options.realtime, fps=self.options.fps)
            self._frames = iter(self._reader)
        except InputError as exc:
            if self.is_file:  # retrying cannot help
                raise
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # an unreachable camera is a state, not a crash
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self.state = CameraState.UP
        logger.info("camera up", extra={"fields": {"camera": self.state.value}})

    def _fail(self, why: str) -> None:
        self._release()
        self._base.failures += 1
        self.state = CameraState.RECONNECTING
        self._retry_at = self.clock.monotonic() + self._backoff
        logger.warning(
            "camera failed, retrying in %.0f s: %s",
            self._backoff,
            why,
            extra={"fields": {"camera": self.state.value}},
        )
        self._backoff = min(self._backoff * 2, self.max_backoff)
        if self._on_failure is not None:
            self._on_failure(why)

    def _ended(self) -> None:
        self._release()
        self.state = CameraState.ENDED
        logger.info("camera source ended", extra={"fields": {"camera": self.state.value}})

    @property
    def is_file(self) -> bool:
        """A file, image or folder (the replay backend), whose errors are the user's to fix."""
        try:
            return resolve(self.source)[0] == "replay"
        except InputError:
            return False

    @property
    def lost(self) -> int:
        """File sources: frames that could not be decoded (damaged images or video), so far."""
        return self._lost + (self._source.info.lost if self._source is not None else 0)

    def _take_staged(self) -> FrameSource | None:
        """The source ``check`` opened, if it is the one wanted now (it comes back opened)."""
        staged, self._staged = self._staged, None
        if staged is None:
            return None
        if staged[0] == self.source:
            return staged[1]
        staged[1].close()
        return None

    def _drop_staged(self) -> None:
        staged, self._staged = self._staged, None
        if staged is not None:
            staged[1].close()

    def _release(self) -> None:
        reader, self._reader, self._frames = self._reader, None, None
        source, self._source = self._source, None
        if source is not None:
            self._lost += source.info.lost
        if reader is None:
            return
        try:
            reader.close()  # zeroes (and counts) a frame left waiting
        except Exception:  # closing a broken device must not mask the original failure
            logger.exception("closing the camera failed")
        t = reader.tally()
        self._base.captured += t.captured
        self._base.dropped += t.dropped
        self._base.skipped += t.skipped
        self._base.discarded += t.discarded
