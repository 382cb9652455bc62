"""Decode buffers are reused once their frame is gone, and never while someone holds it."""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from camhelpers import write_video

from agent.camera.base import SourceInfo, SourceOptions, open_source
from agent.camera.buffers import FramePool
from agent.camera.grabber import PullReader, RateGate, start_reader
from agent.camera.opencv_source import OpenCVSource
from agent.clock import FakeClock, SystemClock
from agent.errors import CameraLost
from agent.frame import Frame, Pixels
from agent.privacy.lease import lease


class FakeCapture:
    """``cv2.VideoCapture``'s ``grab`` and ``retrieve``: frame i is filled with i + 1; a given
    buffer of the right size is written in place, else a new array is allocated (counted)."""

    def __init__(self, shape: tuple[int, int, int] = (4, 6, 3), frames: int = 50) -> None:
        self.shape = shape
        self.frames = frames
        self.count = 0
        self.allocated = 0
        self.converted = 0
        """Frames retrieved (converted to BGR), as against grabbed (``count``)."""
        self.given: list[int | None] = []
        """id() of each buffer given (holding the buffers would keep them busy)."""

    def grab(self) -> bool:
        if self.count >= self.frames:
            return False
        self.count += 1
        return True

    def read(self, image: Any = None) -> tuple[bool, Any]:
        """grab + retrieve in one call, as cv2 does."""
        return self.retrieve(image) if self.grab() else (False, None)

    def retrieve(self, image: Any = None) -> tuple[bool, Any]:
        self.given.append(None if image is None else id(image))
        self.converted += 1
        if image is None or image.shape != self.shape:
            image = np.empty(self.shape, np.uint8)
            self.allocated += 1
        image.fill(self.count % 256)
        return True, image


def test_frames_dropped_after_their_lease_share_one_buffer() -> None:
    pool, cap = FramePool(), FakeCapture()
    for i in range(20):
        pixels = pool.read(cap)
        assert pixels is not None
        assert int(pixels[0, 0, 0]) == i + 1
        pixels.fill(0)  # the lease
        del pixels
    assert cap.allocated == 1
    assert all(b is not None for b in cap.given[1:])


def test_a_held_frame_is_never_decoded_into() -> None:
    pool, cap = FramePool(), FakeCapture()
    held = pool.read(cap)
    assert held is not None
    for _ in range(10):
        other = pool.read(cap)
        assert other is not None
        assert other is not held
        del other
    assert id(held) not in cap.given
    assert int(held.min()) == int(held.max()) == 1  # still the first frame
    assert cap.allocated == 2


def test_the_pool_stays_small_when_every_frame_is_kept() -> None:
    pool, cap = FramePool(), FakeCapture()
    kept = [pool.read(cap) for _ in range(10)]
    assert [int(k[0, 0, 0]) for k in kept if k is not None] == list(range(1, 11))
    assert cap.allocated == 10
    del kept
    assert pool.read(cap) is not None
    assert cap.allocated == 10  # a pooled buffer (at most POOL_SIZE kept) is used again


def test_a_new_frame_size_replaces_the_buffer_and_clear_zeroes() -> None:
    pool, cap = FramePool(), FakeCapture(shape=(4, 6, 3))
    first = pool.read(cap)
    assert first is not None
    ref = weakref.ref(first)
    del first
    cap.shape = (8, 12, 3)
    bigger = pool.read(cap)
    assert bigger is not None
    assert bigger.shape == (8, 12, 3)
    assert ref() is None  # the small buffer left the pool
    del bigger
    pool.clear()
    assert pool.free_buffer() is None
    assert cap.allocated == 2


def test_the_replay_source_decodes_the_same_pixels_into_reused_buffers(clip: Path) -> None:
    """Through the camera layer, frames taken in leases one at a time are cv2's own frames,
    and from the third on each comes in a buffer an earlier frame carried."""
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    expected = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        expected.append(f)
    cap.release()
    src = open_source(str(clip), SourceOptions(realtime=False), FakeClock())
    seen: list[weakref.ref[Pixels]] = []
    reused = 0
    try:
        for want in expected:
            frame = src.read()
            assert frame is not None
            reused += any(r() is frame.pixels for r in seen)
            seen.append(weakref.ref(frame.pixels))
            with lease(frame) as pixels:
                assert np.array_equal(pixels, want)
            del frame, pixels
        assert src.read() is None
    finally:
        src.close()
    assert len(expected) == 6
    assert reused == len(expected) - 1  # one buffer carried every frame


def test_a_pulled_file_is_decoded_into_one_buffer(clip: Path) -> None:
    """``for frame in reader`` (analyze, the service's feed): the reader lets go of each frame
    before it reads the next, so a 1080p replay holds one decoded frame, not two."""
    src = open_source(str(clip), SourceOptions(realtime=False), FakeClock())
    buffers: list[weakref.ref[Pixels]] = []
    try:
        for frame in start_reader(src, realtime=False):
            with lease(frame) as pixels:
                if not any(r() is pixels for r in buffers):
                    buffers.append(weakref.ref(pixels))
            del frame, pixels
    finally:
        src.close()
    assert len(buffers) == 1


class PacedPoolSource:
    """A camera decoding through a ``FramePool``: each read waits until the consumer is done
    with the last frame (as a paced replay or a camera slower than the analysis does)."""

    key: ClassVar[str] = "paced"

    def __init__(self, frames: int) -> None:
        self.pool, self.cap = FramePool(), FakeCapture(frames=frames)
        self.done = threading.Semaphore(0)
        self.first = True

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("paced", "paced", 5.0, 6, 4, live=True)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if not self.first:
            assert self.done.acquire(timeout=5)
        self.first = False
        pixels = self.pool.read(self.cap)
        return None if pixels is None else Frame(pixels, self.cap.count, 0.0, 0.0)

    def close(self) -> None:
        self.pool.clear()


def test_the_grabber_lets_go_of_a_frame_before_the_next_read() -> None:
    """A camera (or a paced replay) read by the grabber thread, analysed before the next frame
    is due: one decode buffer carries every frame. The thread once held the last frame while it
    waited for the next, so the decoder needed a second full-size buffer."""
    src = PacedPoolSource(frames=12)
    reader = start_reader(src, realtime=True)
    seen = 0
    try:
        for frame in reader:
            with lease(frame):
                seen += 1
            del frame
            src.done.release()
    finally:
        reader.close()
    assert seen == 12
    assert src.cap.allocated == 1


class WebcamCapture(FakeCapture):
    """A 30 fps camera on a fake clock: each grab is the next frame, 1/30 s after the last."""

    def __init__(self, clock: FakeClock, frames: int) -> None:
        super().__init__(frames=frames)
        self.clock = clock

    def grab(self) -> bool:
        self.clock.advance(1 / 30)
        return super().grab()


def test_a_camera_converts_only_the_frames_the_rate_limit_lets_through() -> None:
    """A 30 fps webcam analysed at 5 fps: every frame is grabbed, only the analysed ones are
    converted to BGR (for an MJPEG webcam that conversion is the JPEG decode). Each frame was
    converted, then zeroed by the rate gate: 60 conversions for 10 frames analysed."""
    clock = FakeClock()
    cap = WebcamCapture(clock, frames=60)
    source = OpenCVSource("/dev/video0", SourceOptions(fps=5), clock)
    source._cap = cap  # type: ignore[assignment]
    reader = PullReader(source, RateGate(5))
    frames = iter(reader)
    seen = 0
    for frame in itertools.islice(frames, 10):
        with lease(frame):
            seen += 1
        del frame
    with pytest.raises(CameraLost):  # the fake camera stops after its 60 frames
        next(frames)
    assert cap.count == 60
    assert seen == 10
    assert cap.converted == seen
    assert reader.tally().skipped == 50
    assert reader.tally().captured == 60


def test_a_consumer_slower_than_the_camera_sees_two_frame_buffers_not_three(tmp_path: Path) -> None:
    """30 fps replayed in real time to a consumer needing 0.1 s per frame. The grabber decoded
    the next frame while one waited in its slot and another was being analysed: three full-size
    buffers (18 MB at 1080p). Asked before the decode, it drops the waiting frame first."""
    clip = write_video(tmp_path / "c30.mp4", frames=12, fps=30.0)
    reader = start_reader(open_source(str(clip), SourceOptions(realtime=True), SystemClock()), realtime=True)
    buffers: list[weakref.ref[Pixels]] = []
    seen = 0
    try:
        for frame in reader:
            with lease(frame) as pixels:
                seen += 1
                if not any(r() is pixels for r in buffers):
                    buffers.append(weakref.ref(pixels))
                time.sleep(0.1)  # inference slower than the camera
            del frame, pixels
    finally:
        reader.close()
    tally = reader.tally()
    assert tally.dropped >= 4
    assert tally.captured == 12 == tally.dropped + tally.skipped + tally.discarded + seen
    assert len(buffers) == 2
