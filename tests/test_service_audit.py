"""What the running service writes to its audit log is observed, not assumed: frames counted
where they are discarded, an image planted in state_dir fails `audit verify`, the gate's
thumbnail zeroed when the camera fails, the day's privacy budget survives its file, and signed
messages an output still refuses at stop are said to be lost."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from agent.audit.verify import verify_log
from agent.camera.base import SourceInfo
from agent.camera.feed import CameraState
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.crypto import load_public_key
from agent.errors import TransportError
from agent.frame import Frame
from agent.outputs.base import Message
from agent.service import Service
from tests.test_service import (
    NO_GATE,
    AngryCrowd,
    CountingPipeline,
    ScriptedSource,
    messages,
    write_config,
)

T0 = 1_800_000_000.0  # a multiple of 10 s


def entries(tmp: Path) -> list[dict[str, Any]]:
    audit = sorted((tmp / "state" / "audit").glob("segment-*.jsonl"))
    return [json.loads(line) for p in audit for line in p.read_text().splitlines()]


def verify(tmp: Path) -> list[str]:
    key = load_public_key(tmp / "keys" / "device.pub.jwk")
    return verify_log(tmp / "state" / "audit", key).problems


class LiveSource:
    """A camera (read in the grabber thread) that delivers a frame each time it is allowed to."""

    key: ClassVar[str] = "opencv"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.go = threading.Semaphore(0)
        self.count = 0
        self.closed = False

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("opencv", "live", 5.0, 64, 36, live=True)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        while not self.go.acquire(timeout=0.05):
            if self.closed:
                return None
        self.count += 1
        pixels = np.full((36, 64, 3), 90 + self.count, np.uint8)
        return Frame(pixels, self.count, self.clock.monotonic(), self.clock.time())

    def close(self) -> None:
        self.closed = True


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_frame_left_waiting_at_stop_is_counted_as_discarded(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    source = LiveSource(clock)
    cfg = load_config(write_config(tmp_path, "/dev/video0", extra=NO_GATE))
    service = Service(cfg, clock=clock, opener=lambda *_: source,  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]

    service.start()
    for _ in range(3):
        clock.advance(0.2)  # 5 fps: the rate gate lets each one through
        source.go.release()
        wait_for(lambda: service.feed.counters.queued == 1)
        service.step()
    clock.advance(0.2)
    source.go.release()  # one more frame arrives and waits in the queue ...
    wait_for(lambda: service.feed.counters.queued == 1)
    service.close()  # ... when the service stops
    frames = [e["data"] for e in entries(tmp_path) if e["kind"] == "frames"]
    assert sum(f["captured"] for f in frames) == 4
    assert sum(f["analysed"] for f in frames) == 3
    assert sum(f["discarded"] for f in frames) == 1
    assert frames[-1]["queued"] == 0
    assert verify(tmp_path) == []


def test_an_image_written_into_state_dir_fails_audit_verify(tmp_path: Path, media: Path) -> None:
    clock = FakeClock(start=T0)
    cfg = load_config(write_config(tmp_path, "scripted.mp4", extra=NO_GATE))
    service = Service(cfg, clock=clock, opener=lambda _s, _o, c: ScriptedSource(c, 100, False),  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]

    service.start()
    for _ in range(60):  # 12 s of video: the first window closes clean
        service.step()
    ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(media / "astronaut.png")))
    assert ok
    (tmp_path / "state" / "debug-snapshot.bin").write_bytes(jpeg.tobytes())
    service.run()  # to the end of the clip: later windows close with the file there
    frames = [e["data"] for e in entries(tmp_path) if e["kind"] == "frames"]
    assert frames[0]["state_image_files"] == 0
    assert frames[0]["state_files_scanned"] >= 3
    assert frames[-1]["state_image_files"] == 1
    problems = verify(tmp_path)
    assert problems
    assert "1 file(s) in state_dir began with an image or video signature" in problems[0]


def test_the_gates_thumbnail_is_zeroed_when_the_camera_fails(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    cfg = load_config(write_config(tmp_path, "scripted.mp4"))  # change gate on (the default)
    service = Service(cfg, clock=clock, opener=lambda _s, _o, c: ScriptedSource(c, 5, True),  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]

    service.start()
    for _ in range(5):
        service.step()
    assert not service.stage.gate.is_zero(), "the reference thumbnail of the last frame is kept"
    service.step()  # the camera is unplugged
    assert service.feed.state is CameraState.RECONNECTING
    assert service.stage.gate.is_zero()
    service.close()


DP = (
    "analytics: {window_seconds: 10, min_people: 2, "
    "dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 3}}\n"
)


def run_clip(tmp: Path, clock: FakeClock, seconds: int) -> list[dict[str, Any]]:
    path = write_config(tmp, "scripted.mp4", extra=NO_GATE)
    path.write_text(path.read_text().replace("analytics: {window_seconds: 10, min_people: 2}\n", DP))
    cfg = load_config(path)
    service = Service(cfg, clock=clock, opener=lambda _s, _o, c: ScriptedSource(c, seconds * 5, False),  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]
    assert service.run() == 0
    return [m["body"] for m in messages(tmp, "stats")]


def test_deleting_the_budget_file_does_not_give_the_day_its_budget_back(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    first = run_clip(tmp_path, clock, 20)  # two windows: 1.0 of the day's 3.0 spent
    assert [s["budget_left_micro"] for s in first] == [2_500_000, 2_000_000]
    (tmp_path / "state" / "dp_budget.json").unlink()
    (tmp_path / "out.jsonl").unlink()
    clock.advance(60)
    second = run_clip(tmp_path, clock, 20)
    assert [s["budget_left_micro"] for s in second] == [1_500_000, 1_000_000]
    spent = [e["data"]["dp_spent_micro"] for e in entries(tmp_path) if e["kind"] == "window"]
    assert spent == [500_000] * 4
    assert verify(tmp_path) == []


def test_a_reload_that_raises_the_daily_budget_does_not_raise_todays(tmp_path: Path) -> None:
    """1.0 a day at 0.5 a window: spent after two windows. A SIGHUP reload to 5.0 applies from
    the next UTC day; today's windows stay withheld, and the policy record names the new budget."""
    clock = FakeClock(start=T0)
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE)
    tight = DP.replace("daily_budget: 3", "daily_budget: 1")
    path.write_text(path.read_text().replace("analytics: {window_seconds: 10, min_people: 2}\n", tight))
    service = Service(load_config(path), path, clock=clock,
                      opener=lambda _s, _o, c: ScriptedSource(c, 500, False),  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]
    service.start()
    for _ in range(100):  # 20 s of video: two windows spend the day's 1.0
        service.step()
    path.write_text(path.read_text().replace("daily_budget: 1", "daily_budget: 5"))
    assert service.reload()
    for _ in range(100):
        service.step()
    service.close()
    stats = [m["body"] for m in messages(tmp_path, "stats")]
    assert all(s["suppressed"] != "dp_budget" for s in stats[:2])
    assert stats[1]["budget_left_micro"] == 0
    assert all(s["suppressed"] == "dp_budget" for s in stats[2:])
    assert len(stats) >= 4
    policies = [e["data"]["policy"] for e in entries(tmp_path) if e["kind"] in ("start", "policy_change")]
    assert [p["dp_daily_budget_milli"] for p in policies] == [1000, 5000]
    assert verify(tmp_path) == []


class ArrivingPipeline(CountingPipeline):
    """While it analyses a frame, the camera delivers the next one: it waits in the queue when
    the service takes its figures after the analysis."""

    def __init__(self, source: LiveSource, clock: FakeClock) -> None:
        super().__init__()
        self.source, self.clock = source, clock
        self.feed: Any = None

    def analyze(
        self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
    ) -> list[Any]:
        out = super().analyze(pixels, schedule, frame)
        self.clock.advance(0.2)
        self.source.go.release()
        wait_for(lambda: self.feed.counters.queued == 1)
        return out


def test_frames_stay_accounted_across_a_reload_and_a_pause_with_a_frame_waiting(tmp_path: Path) -> None:
    """A frame waits in the queue when the window's figures are taken, the config is reloaded
    and privacy mode then closes the camera: the empty windows that follow still balance (the
    new aggregator knows a frame was waiting)."""
    clock = FakeClock(start=T0)
    source = LiveSource(clock)
    pipeline = ArrivingPipeline(source, clock)
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    service = Service(load_config(path), path, clock=clock, opener=lambda *_: source,  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: pipeline)  # type: ignore[arg-type,return-value]
    pipeline.feed = service.feed
    service.start()
    clock.advance(0.2)
    source.go.release()
    wait_for(lambda: service.feed.counters.queued == 1)
    service.step()  # analyses frame 1; frame 2 arrives meanwhile and waits
    path.write_text(path.read_text().replace("min_people: 2", "min_people: 3"))
    assert service.reload()
    service.privacy.set("signal", True)
    for _ in range(150):  # 30 s with the camera closed: empty windows close
        service.step()
        clock.advance(0.2)
    service.close()
    frames = [e["data"] for e in entries(tmp_path) if e["kind"] == "frames"]
    assert frames[0]["queued"] == 1
    assert sum(f["captured"] for f in frames) == 2
    assert sum(f["discarded"] for f in frames) == 1
    assert len(frames) >= 4
    assert verify(tmp_path) == []


class FullSpool:
    """The MQTT output on a full disk: the spool cannot commit a row."""

    def start(self) -> None:
        pass

    def send(self, message: Message) -> None:
        raise TransportError("spool.sqlite3: cannot write to the offline spool: database or disk is full")

    def stop(self, timeout: float) -> None:
        pass


def test_messages_still_held_at_stop_are_logged_and_audited_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: close() flushed the last window into the publisher's memory queue, stopped the
    outputs and exited; the held signed messages vanished without a log line or an audit entry."""
    path = write_config(tmp_path, "scripted.mp4")
    service = Service(
        load_config(path), path, FakeClock(start=T0), outputs=[FullSpool()],
        opener=lambda s, o, c: ScriptedSource(c, 200, False),
        pipeline_factory=lambda _c: AngryCrowd(),  # type: ignore[arg-type,return-value]
    )
    service.start()
    for _ in range(30):
        service.step()
    assert service.publisher.held > 0
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="agent.publisher"):
        service.close()
    held = service.publisher.held  # the last window and the closing checkpoint among them
    said = [r.getMessage() for r in caplog.records if "lost at stop" in r.getMessage()]
    assert len(said) == 1, said
    assert f"{held} message(s)" in said[0]
    assert "database or disk is full" in said[0]
    logged = entries(tmp_path)
    lost = [e["data"]["message"] for e in logged if e["data"].get("code") == "publish_lost"]
    assert len(lost) == 1
    assert lost[0].startswith(f"{held} message(s) waiting in memory are lost at stop")
    assert any(e["kind"] == "stop" for e in logged)
    assert verify(tmp_path) == []


class LoresLiveSource(LiveSource):
    """As ``LiveSource``, each frame with the camera's scaled copy (``Frame.lores``) too: a new
    array per frame, which no pool zeroes later. Every frame it made is kept, to be looked at."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.made: list[Frame] = []

    def read(self) -> Frame | None:
        frame = super().read()
        if frame is None:
            return None
        lores = np.full((18, 32, 3), 77, np.uint8)
        self.made.append(Frame(frame.pixels, frame.index, frame.captured_mono, frame.timestamp, lores=lores))
        return self.made[-1]


def test_a_frame_waiting_when_closing_a_window_fails_is_zeroed_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due windows close before a frame is taken. Closing one can raise (the day's privacy
    budget or the alert baseline written to a full disk): a frame taken before that left the
    loop neither leased nor zeroed, its lores copy freed with the pixels still in it, and
    counted as captured but neither analysed nor discarded. Now none is in hand then: the one
    waiting is zeroed and counted when the camera closes."""
    clock = FakeClock(start=T0)
    source = LoresLiveSource(clock)
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    service = Service(load_config(path), path, clock=clock, opener=lambda *_: source,  # type: ignore[arg-type,return-value]
                      pipeline_factory=lambda _c: CountingPipeline())  # type: ignore[arg-type,return-value]
    service.start()
    for _ in range(2):
        clock.advance(0.2)
        source.go.release()
        wait_for(lambda: service.feed.counters.queued == 1)
        service.step()
    clock.advance(10.0)  # the first window is due
    source.go.release()
    wait_for(lambda: service.feed.counters.queued == 1)

    def full_disk(now: float) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(service.aggregator, "poll", full_disk)
        with pytest.raises(OSError, match="No space left"):
            service.step()
    service.close()
    assert len(source.made) == 3
    for frame in source.made:
        assert frame.lores is not None
        assert not frame.pixels.any()
        assert not frame.lores.any()
    frames = [e["data"] for e in entries(tmp_path) if e["kind"] == "frames"]
    assert sum(f["captured"] for f in frames) == 3
    assert sum(f["analysed"] for f in frames) == 2
    assert sum(f["discarded"] for f in frames) == 1
    assert verify(tmp_path) == []
