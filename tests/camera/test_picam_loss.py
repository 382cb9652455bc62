"""A picamera2 camera lost in the field: frames that stop (a loose ribbon cable), and a
request the camera refuses back (found by review)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fake_picamera2 import FakeCompletedRequest, FakePicamera2, make_module

from agent.camera import picam
from agent.camera.base import SourceOptions
from agent.camera.feed import CameraFeed, CameraState
from agent.camera.picam import Picamera2Source
from agent.clock import FakeClock
from agent.errors import CameraLost


@pytest.fixture
def unblock() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let a hung grabber thread finish after the test


def test_a_camera_whose_frames_stop_is_reported_and_reopened(
    clock: FakeClock, unblock: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loose ribbon cable: libcamera logs "Camera frontend has timed out!" and picamera2's
    ``capture_request()`` (wait=None) then blocks for ever (picamera2 #962, #1295; picamera2's own
    ``cancel_all_and_flush`` docstring). Given a number, ``wait`` raises TimeoutError instead.
    The feed must notice: a camera_failed error and a reconnect, not 'up' with no frames for ever."""
    module = make_module()
    real_capture = FakePicamera2.capture_request
    stalled = threading.Event()

    def capture(self: FakePicamera2, wait: Any = None, flush: Any = None) -> FakeCompletedRequest:
        if stalled.is_set():
            if isinstance(wait, (int, float)) and not isinstance(wait, bool):
                time.sleep(min(float(wait), 0.5))
                raise TimeoutError  # concurrent.futures' TimeoutError from job.get_result
            unblock.wait()  # the real one: no frame ever completes
            raise RuntimeError("camera gone")
        time.sleep(0.02)
        return real_capture(self, wait, flush)

    monkeypatch.setattr(FakePicamera2, "capture_request", capture)
    failures: list[str] = []

    def opener(source: str, options: SourceOptions, c: object) -> Picamera2Source:
        src = Picamera2Source("0", options, clock, module=module)
        src.open()
        return src

    feed = CameraFeed("picamera2", SourceOptions(fps=5), clock, opener=opener, on_failure=failures.append)
    feed.open()
    got = None
    for _ in range(50):
        got = feed.next_frame(timeout=0.2)
        if got is not None:
            break
    assert got is not None
    stalled.set()
    deadline = time.monotonic() + 12.0
    while time.monotonic() < deadline and not failures:
        frame = feed.next_frame(timeout=0.2)
        if frame is not None:
            frame.pixels.fill(0)
        clock.advance(0.5)
    state = feed.state
    feed_close = threading.Thread(target=feed.close, daemon=True)
    feed_close.start()
    assert failures, f"12 s without a frame, camera still {state.value!r}, no error, no reopen"
    assert state is CameraState.RECONNECTING
    assert "no frame for 3 s" in failures[0], failures[0]
    assert "cancel_all_and_flush" in FakePicamera2.instances[0].calls  # so it can be closed


@pytest.mark.parametrize("grey", [False, True])
def test_a_request_that_fails_to_release_leaves_no_pixels_behind(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, grey: bool
) -> None:
    """``CompletedRequest.release`` re-queues the request (``camera.queue_request``, which raises
    when libcamera refuses it, e.g. a camera that has gone away). The copies the read already made
    of the frame (main, in colour or grey, and lores) must then be zeroed, as at every other camera
    loss."""
    scene = np.full((720, 1280, 3), 200, np.uint8)
    module = make_module(scene=[scene])
    src = Picamera2Source("0", SourceOptions(fps=5, detector_side=192), clock, module=module)
    src.open()
    src.detector_read(192, None, grey)
    made: list[np.ndarray] = []
    copy = Picamera2Source._copy
    to_rgb = picam.yuv420_to_rgb

    def recording_copy(self: Picamera2Source, view: Any, grey: bool = False) -> np.ndarray:
        out = copy(self, view, grey)
        made.append(out)
        return out

    def recording_rgb(yuv: Any, w: int, h: int) -> np.ndarray:
        out = to_rgb(yuv, w, h)
        made.append(out)
        return out

    monkeypatch.setattr(Picamera2Source, "_copy", recording_copy)
    monkeypatch.setattr(picam, "yuv420_to_rgb", recording_rgb)
    release = FakeCompletedRequest.release

    def failing_release(self: FakeCompletedRequest) -> None:
        release(self)
        raise RuntimeError("Failed to queue request: No such device")

    monkeypatch.setattr(FakeCompletedRequest, "release", failing_release)
    with pytest.raises((CameraLost, RuntimeError)):
        src.read()
    assert len(made) == 2  # the frame's copy and the lores RGB were both made
    assert [a.ndim for a in made] == [3, 2 if grey else 3]  # the lores RGB first, then the frame's copy
    assert [int(a.max()) for a in made] == [0, 0], "copies of the frame left unzeroed"
