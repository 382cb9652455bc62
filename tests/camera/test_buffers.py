"""Decode buffers are reused once their frame is gone, and never while someone holds it."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from agent.camera.base import SourceInfo, SourceOptions, open_source
from agent.camera.buffers import FramePool
from agent.camera.grabber import start_reader
from agent.clock import FakeClock
from agent.frame import Frame, Pixels
from agent.privacy.lease import lease


class FakeCapture:
    """``cv2.VideoCapture.read``: frame i is filled with i + 1; a given buffer of the right size
    is written in place, else a new array is allocated (counted)."""

    def __init__(self, shape: tuple[int, int, int] = (4, 6, 3), frames: int = 50) -> None:
        self.shape = shape
        self.frames = frames
        self.count = 0
        self.allocated = 0
        self.given: list[int | None] = []
        """id() of each buffer given (holding the buffers would keep them busy)."""

    def read(self, image: Any = None) -> tuple[bool, Any]:
        self.given.append(None if image is None else id(image))
        if self.count >= self.frames:
            return False, None
        self.count += 1
        if image is None or image.shape != self.shape:
            image = np.empty(self.shape, np.uint8)
            self.allocated += 1
        image.fill(self.count)
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
