"""At most one frame waits between camera and consumer: the newest wins, the replaced is zeroed."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from camhelpers import write_video

from agent.camera.base import SourceInfo, SourceOptions, Wanted, open_source
from agent.camera.grabber import FrameTally, Grabber, LatestFrameSlot, PullReader, RateGate, start_reader
from agent.clock import FakeClock, SystemClock
from agent.errors import CameraLost
from agent.frame import Frame


def make_frame(i: int, t: float | None = None) -> Frame:
    """A frame with a camera-scaled copy too (``Frame.lores``, picamera2's lores stream)."""
    lores = np.full((2, 2, 3), i + 1, np.uint8)
    return Frame(np.full((4, 4, 3), i + 1, np.uint8), i, float(i), 0.0, source_time=t, lores=lores)


class ListSource:
    """A live source serving prepared frames; optionally waits for a go-ahead before each read."""

    key: ClassVar[str] = "list"

    def __init__(self, frames: list[Frame], error: Exception | None = None, gated: bool = False) -> None:
        self.frames = list(frames)
        self.error = error
        self.go = threading.Semaphore(0) if gated else None
        self.closed = False

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("list", "list", None, 4, 4, live=True)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.go is not None:
            assert self.go.acquire(timeout=5)
        if self.frames:
            return self.frames.pop(0)
        if self.error is not None:
            raise self.error
        return None

    def close(self) -> None:
        self.closed = True


def test_slot_keeps_the_newest_frame_and_zeroes_the_one_it_replaces() -> None:
    slot = LatestFrameSlot()
    old, new = make_frame(0), make_frame(1)
    slot.put(old)
    slot.put(new)
    assert slot.dropped == 1
    assert not old.pixels.any()
    assert old.lores is not None
    assert not old.lores.any()
    assert slot.take(timeout=0) is new
    assert new.pixels.all()
    assert slot.take(timeout=0) is None


def test_a_slow_consumer_gets_only_the_newest_frame_and_every_other_is_zeroed() -> None:
    frames = [make_frame(i) for i in range(20)]
    grabber = Grabber(ListSource(frames)).start()
    assert grabber.join(timeout=5)
    got = list(grabber)
    assert got == [frames[-1]]
    assert (grabber.captured, grabber.dropped) == (20, 19)
    assert all(not f.pixels.any() for f in frames[:-1])
    grabber.close()


def test_a_consumer_that_keeps_up_loses_nothing() -> None:
    frames = [make_frame(i) for i in range(10)]
    source = ListSource(frames, gated=True)
    grabber = Grabber(source).start()
    got = []
    source.go.release()  # type: ignore[union-attr]
    for frame in grabber:
        got.append(frame.index)
        source.go.release()  # type: ignore[union-attr]  # the camera delivers the next only now
    assert got == list(range(10))
    assert (grabber.captured, grabber.dropped) == (10, 0)
    grabber.close()


def test_a_camera_error_reaches_the_consumer_after_the_last_frame() -> None:
    lost = CameraLost("cam: the camera stopped delivering frames")
    source = ListSource([make_frame(0)], error=lost, gated=True)
    grabber = Grabber(source).start()
    source.go.release()  # type: ignore[union-attr]
    it = iter(grabber)
    assert next(it).index == 0
    source.go.release()  # type: ignore[union-attr]
    with pytest.raises(CameraLost, match="the camera stopped delivering frames"):
        next(it)
    grabber.close()
    assert source.closed


def test_close_zeroes_a_frame_left_waiting_and_releases_the_source() -> None:
    frame = make_frame(0)
    source = ListSource([frame])
    grabber = Grabber(source).start()
    assert grabber.join(timeout=5)
    grabber.close()
    assert not frame.pixels.any()
    assert frame.lores is not None
    assert not frame.lores.any()
    assert source.closed


def test_rate_gate_thins_a_25_fps_stream_to_5_and_restarts_after_a_gap() -> None:
    gate = RateGate(5)
    times = [i / 25 for i in range(25)]
    assert [round(t, 2) for t in times if gate.admit(t)] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert gate.admit(10.0)  # after a stall the grid restarts at the next frame
    assert not gate.admit(10.1)
    assert gate.admit(10.2)
    assert all(RateGate(None).admit(t) for t in times)


def test_pull_reader_drops_nothing_and_zeroes_what_the_gate_skips() -> None:
    frames = [make_frame(i, t=i / 10) for i in range(10)]
    reader = PullReader(ListSource(frames), RateGate(5))
    got = [f.index for f in reader]
    assert got == [0, 2, 4, 6, 8]
    assert (reader.captured, reader.dropped, reader.skipped) == (10, 0, 5)
    assert all(not frames[i].pixels.any() for i in (1, 3, 5, 7, 9))
    assert all(not np.any(frames[i].lores) for i in (1, 3, 5, 7, 9))
    assert all(np.all(frames[i].lores) for i in (0, 2, 4))  # handed out: the consumer's lease zeroes them
    reader.close()


def test_file_at_full_speed_is_pulled_while_real_time_replay_gets_a_grabber(
    tmp_path: Path, clock: FakeClock
) -> None:
    clip = write_video(tmp_path / "c.mp4", frames=4)
    fast = start_reader(open_source(str(clip), SourceOptions(realtime=False), clock), realtime=False)
    assert isinstance(fast, PullReader)
    assert len(list(fast)) == 4
    fast.close()
    paced = start_reader(open_source(str(clip), SourceOptions(realtime=True), clock), realtime=True)
    assert isinstance(paced, Grabber)
    assert paced.join(timeout=5)
    assert paced.captured == 4
    paced.close()


def test_an_unexpected_backend_failure_reaches_the_consumer_as_camera_lost() -> None:
    grabber = Grabber(ListSource([], error=ValueError("decoder exploded"))).start()
    with pytest.raises(CameraLost, match="list: the source failed: decoder exploded") as info:
        list(grabber)
    assert isinstance(info.value.__cause__, ValueError)
    grabber.close()


def test_real_time_replay_with_a_slow_consumer_drops_and_zeroes_the_stale_frames(tmp_path: Path) -> None:
    """30 fps replayed in real time (0.4 s) to a consumer needing 0.1 s per frame: most are dropped."""
    clip = write_video(tmp_path / "c30.mp4", frames=12, fps=30.0)
    source = open_source(str(clip), SourceOptions(realtime=True), SystemClock())
    produced: list[Frame] = []
    read = source.read_wanted  # type: ignore[attr-defined]

    def recording_read(wanted: Wanted) -> Frame | None:
        frame: Frame | None = read(wanted)
        if frame is not None:
            produced.append(frame)
        return frame

    source.read_wanted = recording_read  # type: ignore[attr-defined]
    reader = start_reader(source, realtime=True)
    seen: list[Frame] = []
    for frame in reader:
        seen.append(frame)
        time.sleep(0.1)  # inference slower than the camera
    assert reader.captured == len(produced) == 12
    assert len(seen) + reader.dropped == 12
    assert reader.dropped >= 4
    dropped = [f for f in produced if f not in seen]
    assert len(dropped) == reader.dropped
    assert all(not f.pixels.any() for f in dropped)
    assert all(f.pixels.any() for f in seen if f.index > 0)  # delivered frames were left intact
    reader.close()


class HangingSource(ListSource):
    """A stream whose read hangs until released (a stalled RTSP server), then returns a frame."""

    def __init__(self, frame: Frame) -> None:
        super().__init__([frame], gated=True)
        self.reading = threading.Event()
        self.closed_during_read = False

    def read(self) -> Frame | None:
        self.reading.set()
        frame = super().read()
        self.reading.clear()
        return frame

    def close(self) -> None:
        self.closed_during_read = self.reading.is_set()
        super().close()


def test_a_frame_that_arrives_after_close_gave_up_is_zeroed_and_the_thread_closes_the_source() -> None:
    late = make_frame(7)
    source = HangingSource(late)
    grabber = Grabber(source).start()
    assert source.reading.wait(timeout=5)
    grabber.close(timeout=0.05)  # gives up: the read is still hanging
    assert not source.closed, "closing a capture while another thread reads from it is unsafe"
    source.go.release()  # type: ignore[union-attr]  # the stream wakes up with one more frame
    assert grabber.join(timeout=5)
    assert not late.pixels.any(), "the late frame must be zeroed, not left in the mailbox"
    assert source.closed
    assert not source.closed_during_read
    assert grabber.tally() == FrameTally(captured=1, discarded=1)


def test_the_tally_accounts_for_every_frame_where_its_fate_happened() -> None:
    frames = [make_frame(i, t=i / 10) for i in range(10)]
    source = ListSource(frames, gated=True)
    grabber = Grabber(source, RateGate(5)).start()
    for _ in range(3):
        source.go.release()  # type: ignore[union-attr]
    taken = grabber.slot.take(timeout=5)
    assert taken is not None
    for _ in range(8):  # the other seven frames, then the end of the stream
        source.go.release()  # type: ignore[union-attr]
    assert grabber.join(timeout=5)
    waiting = grabber.tally()
    grabber.close()
    closed = grabber.tally()
    assert waiting.queued == 1
    assert waiting.captured == 1 + waiting.dropped + waiting.skipped + waiting.discarded + waiting.queued
    assert (closed.captured, closed.skipped, closed.discarded, closed.queued) == (10, 5, 1, 0)
    assert closed.captured == 1 + closed.dropped + closed.skipped + closed.discarded
