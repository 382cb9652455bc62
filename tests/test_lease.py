"""Frame leases: the buffer is zero after the block, whatever happened inside it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.frame import Frame
from agent.privacy.lease import LifetimeRecorder, lease
from agent.vision.observation import FaceObservation, Quality


def make_frame(clock: FakeClock) -> Frame:
    pixels = np.full((36, 64, 3), 200, dtype=np.uint8)
    return Frame(pixels=pixels, index=0, captured_mono=clock.monotonic(), timestamp=clock.time())


def test_buffer_is_zero_after_the_block(clock: FakeClock) -> None:
    frame = make_frame(clock)
    with lease(frame) as pixels:
        assert pixels.max() == 200
    assert not frame.pixels.any()


def test_buffer_is_zero_after_an_exception(clock: FakeClock) -> None:
    frame = make_frame(clock)
    with pytest.raises(RuntimeError), lease(frame):
        raise RuntimeError("inference failed")
    assert not frame.pixels.any()


def test_lifetime_is_capture_to_zeroing(clock: FakeClock) -> None:
    recorder = LifetimeRecorder(clock)
    frame = make_frame(clock)
    clock.advance(0.012)
    with lease(frame, recorder):
        clock.advance(0.030)
    stats = recorder.drain()
    assert stats.count == 1
    assert stats.max_ms == pytest.approx(42.0)
    assert recorder.drain().count == 0


def test_percentile_is_nearest_rank() -> None:
    recorder = LifetimeRecorder(FakeClock())
    for ms in range(1, 101):
        recorder.record(float(ms))
    stats = recorder.drain()
    assert stats.percentile(99) == 99.0
    assert stats.percentile(50) == 50.0


def test_read_only_view_zeroes_its_base(clock: FakeClock) -> None:
    base = np.full((8, 8, 3), 9, dtype=np.uint8)
    view = base[2:6]
    view.flags.writeable = False
    frame = Frame(pixels=view, index=0, captured_mono=0.0, timestamp=0.0)
    with lease(frame):
        pass
    assert not base.any()


def test_observations_hold_no_arrays() -> None:
    obs = FaceObservation(
        box=(0.1, 0.2, 0.3, 0.4),
        score=0.9,
        keypoints=((0.2, 0.3),) * 6,
        quality=Quality(face_px=80, sharpness=100, brightness=120, yaw_degrees=3),
        probs=(("happy", 0.8), ("neutral", 0.2)),
    )

    def walk(value: object) -> None:
        assert not isinstance(value, np.ndarray | np.generic | bytes | memoryview)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, tuple | list):
            for v in value:
                walk(v)

    walk(obs)
    assert obs.emotion == "happy"
