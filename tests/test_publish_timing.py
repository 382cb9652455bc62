"""A window's messages leave at a time that does not depend on the faces in view (found by
review): with a live camera they left after the first frame past the window's end had been
analysed, and inference takes longer the more faces there are, so the envelope's ``ts`` minus
the window's end told how many faces were in that frame, even for a window whose figures are
suppressed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.camera.base import SourceInfo
from agent.camera.feed import CameraState
from agent.camera.grabber import Grabber
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.frame import Frame
from agent.service import Service
from agent.transport.commands import Command
from agent.vision.observation import FaceObservation
from tests.analytics.faces import face
from tests.test_service import NO_GATE, messages, write_config

T0 = 1_800_000_000.0
INFERENCE_S_PER_FACE = 0.005


class LiveSource:
    """A camera at 5 fps on the fake clock."""

    key: ClassVar[str] = "opencv"

    def __init__(self, clock: Clock) -> None:
        self.clock, self.pos = clock, 0

    @property
    def info(self) -> SourceInfo:
        return SourceInfo("opencv", "/dev/video0", 5.0, 64, 36, live=True)

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        self.pos += 1
        pixels = np.full((36, 64, 3), 120, dtype=np.uint8)
        return Frame(pixels, self.pos, self.clock.monotonic(), self.clock.time())

    def close(self) -> None:
        pass


class FailingSource(LiveSource):
    """A camera that fails for good once ``failed`` is set (unplugged): every read raises."""

    failed = False

    def read(self) -> Frame | None:
        if self.failed:
            raise OSError("the camera is gone")
        return super().read()


class SlowerWithFaces:
    """Inference that takes longer with more faces, as the real one does; ``faces`` of them in
    every frame from ``after`` (wall time) on."""

    labels = ("happy", "neutral")
    detector_side = 192
    grey_frames = False

    def __init__(self, clock: FakeClock, faces: int, after: float, until: float = float("inf")) -> None:
        self.clock, self.faces, self.after, self.until = clock, faces, after, until

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        n = self.faces if self.after <= self.clock.time() < self.until else 0
        self.clock.advance(INFERENCE_S_PER_FACE * n)
        return [face(x=0.1 + 0.2 * i) for i in range(n)]

    def close(self) -> None:
        pass


def first_window_ts(tmp_path: Path, faces: int) -> int:
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    clock = FakeClock(start=T0)
    pipeline = SlowerWithFaces(clock, faces, after=T0 + 10.0)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    while clock.time() < T0 + 10.5:
        service.step()
        clock.advance(0.2)
    service.close()
    (stats, *_) = [m for m in messages(tmp_path, "stats") if m["body"]["window_start"] == T0]
    return int(stats["ts"])


def test_a_windows_message_time_does_not_depend_on_the_faces_after_it(tmp_path: Path) -> None:
    none, three = first_window_ts(tmp_path / "a", 0), first_window_ts(tmp_path / "b", 3)
    assert none == three, f"ts {none} with no face after the window's end, {three} with three"


PHASE_S = 0.19
"""The camera's frames come at T0 + 0.19 + 0.2 k: the last one of a window 10 ms before its end."""


class CameraPacedClock(FakeClock):
    """A fake clock the camera's frames set to their own times: the same floats whatever the
    inference before them added (sums of different steps round differently, and a checkpoint
    due by time at exactly a frame's time would come a frame later)."""

    def at_frame(self, k: int) -> None:
        offset = PHASE_S + 0.2 * k
        if offset < self._mono:
            raise AssertionError(f"inference took longer than the camera's frame interval at frame {k}")
        self._wall, self._mono = T0 + offset, offset


def live_run(
    tmp_path: Path, faces: int, seconds: float, extra: str = "", *, window: int = 10,
    commands: dict[int, Command] | None = None, stop_in_inference: bool = False,
    fail_in_inference: bool = False,
) -> Path:
    """A live camera whose frames come on the camera's own schedule (not when the loop is
    ready), k = 5, ``faces`` faces in every frame: every window suppressed. The stop comes
    between two frames, as a signal would, or with ``stop_in_inference`` while the last frame
    is analysed (SIGTERM from systemd); ``commands`` arrive from MQTT as frame k comes. With
    ``fail_in_inference`` the camera fails while the last frame is analysed, and the stop comes
    in the turn after the one that finds it gone."""
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE + extra, window=window, k=5)
    clock = CameraPacedClock(start=T0)
    pipeline = SlowerWithFaces(clock, faces, after=T0)
    camera = FailingSource(clock)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: camera,
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    frames = round((seconds - PHASE_S) / 0.2)
    due = [0]

    def camera_paced(wait: Any) -> Any:
        """Where the loop waits for the camera, the clock moves on to its next frame: what the
        turn does before it runs right after the last frame's inference."""

        def paced(timeout: float = 0.5) -> Any:
            if not camera.failed:  # a camera that failed brings no frame: the clock stays
                clock.at_frame(due[0])
            if due[0] == frames + fail_in_inference:  # SIGTERM while the loop waits
                service.signals.stop.set()
            return wait(timeout)

        return paced

    for name in ("wait_for_frame", "next_frame"):  # the first the loop calls in a turn waits
        if hasattr(service.feed, name):
            setattr(service.feed, name, camera_paced(getattr(service.feed, name)))
    if stop_in_inference or fail_in_inference:
        analyze = pipeline.analyze

        def last_frame_meanwhile(*args: Any, **kwargs: Any) -> list[FaceObservation]:
            found = analyze(*args, **kwargs)
            if due[0] == frames - 1 and stop_in_inference:
                service.signals.stop.set()
            if due[0] == frames - 1 and fail_in_inference:
                camera.failed = True
                grabber = service.feed._reader
                assert isinstance(grabber, Grabber)
                assert grabber.join(5)
                grabber.slot.make_room()  # no frame taken before the failure waits
            return found

        pipeline.analyze = last_frame_meanwhile  # type: ignore[method-assign]
    for k in range(frames):
        due[0] = k
        service.step()
        if commands and k in commands:  # arrives while frame k is analysed
            service._enqueue_command(commands[k])
    due[0] = frames
    if fail_in_inference:
        service.step()  # finds the camera gone
        assert service.feed.state is not CameraState.UP
        due[0] += 1
    if not stop_in_inference:  # then ``run`` leaves its loop before another turn
        service.step()  # the stop: it takes no frame
    assert service.stop_requested
    service.close()
    return tmp_path


def _times(tmp: Path, suffix: str) -> list[int]:
    return [int(m["ts"]) for m in messages(tmp, suffix)]


def test_a_suppressed_windows_message_time_does_not_depend_on_its_last_frames_faces(tmp_path: Path) -> None:
    """The last frame of a window came 10 ms before its end; when its inference ran past the
    end, the window left right after it (ts - end: 190 ms with no face, 0 with two, 5 with three
    faces, 5 ms each), not at the next frame."""
    runs = {n: live_run(tmp_path / str(n), n, 10.5) for n in (0, 2, 3)}
    stats = {n: [ts for ts, m in zip(_times(t, "stats"), messages(t, "stats"), strict=True)
                 if m["body"]["window_start"] == T0] for n, t in runs.items()}
    assert all(m["body"]["suppressed"] for t in runs.values() for m in messages(t, "stats"))
    assert stats[0] == stats[2] == stats[3], stats
    assert len(stats[0]) == 1


def test_a_checkpoint_due_by_time_is_not_signed_after_a_frames_inference(tmp_path: Path) -> None:
    """With the default settings checkpoints come due by time: one was signed at the end of the
    loop turn, right after the frame's inference, so its ts (minus the camera's frame phase,
    which every stats message shows) told how many faces that frame held, window after
    suppressed window."""
    extra = "audit: {checkpoint_every_minutes: 1}\n"
    runs = {n: live_run(tmp_path / str(n), n, 130.0, extra, window=60) for n in (0, 1, 3)}
    checkpoints = {n: _times(t, "audit/checkpoint") for n, t in runs.items()}
    assert len(checkpoints[0]) >= 3, checkpoints
    assert checkpoints[0] == checkpoints[1] == checkpoints[3], checkpoints


def test_what_a_command_makes_the_device_sign_does_not_time_the_frame_before_it(tmp_path: Path) -> None:
    """Commands, privacy-mode changes and reconnects were handled at the top of the loop turn,
    right after the last frame's inference: anyone allowed to send ``checkpoint`` could ask,
    once a second, for a signed message whose ts (minus the frame phase) told how many faces the
    frame just analysed held."""
    runs = {n: live_run(tmp_path / str(n), n, 6.0, commands={20: Command("checkpoint")}) for n in (0, 2)}
    checkpoints = {n: _times(t, "audit/checkpoint") for n, t in runs.items()}
    assert len(checkpoints[0]) == 2, checkpoints  # the one asked for (at most one a minute) and the stop's
    assert checkpoints[0] == checkpoints[2], checkpoints


def test_what_the_stop_signs_does_not_time_the_inference_it_came_during(tmp_path: Path) -> None:
    """SIGTERM (systemd stopping the unit) while a frame was analysed: the stop flushed the open
    window and signed its checkpoint right after that inference, so their ts (minus the frame
    phase) told how many faces the last frame held."""
    runs = {n: live_run(tmp_path / str(n), n, 6.0, stop_in_inference=True) for n in (0, 2, 3)}
    for suffix in ("stats", "audit/checkpoint"):
        times = {n: _times(t, suffix) for n, t in runs.items()}
        assert times[0], (suffix, times)
        assert times[0] == times[2] == times[3], (suffix, times)


def test_the_turn_after_a_camera_fails_does_not_time_the_inference_before_it(tmp_path: Path) -> None:
    """A camera that fails ends its grabber at once, so the next turn's wait for a frame ended
    right after the last inference: what that turn signed (the health message saying the camera
    is lost, a due window) and everything after it told how many faces the last frame held."""
    runs = {n: live_run(tmp_path / str(n), n, 6.0, fail_in_inference=True) for n in (0, 2, 3)}
    for suffix in ("health", "stats", "audit/checkpoint"):
        times = {n: _times(t, suffix) for n, t in runs.items()}
        assert times[0], (suffix, times)
        assert times[0] == times[2] == times[3], (suffix, times)
    assert any(m["body"].get("camera") == "reconnecting" for m in messages(runs[0], "health"))


def test_a_turn_without_a_new_frame_waits_until_a_time_its_inference_does_not_move(tmp_path: Path) -> None:
    """With a camera slower than the loop's wait (camera.fps 1, or one that stalls), the wait
    timed out 0.5 s after the last inference ended, and what the turn signed then told how long
    that inference took. It now ends 0.5 s after the last frame was taken, whatever came after."""
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    clock = FakeClock(start=T0)
    service = Service(
        load_config(path), path, clock, opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: SlowerWithFaces(clock, 0, after=T0),  # type: ignore[arg-type,return-value]
    )
    service.start()
    try:
        service.step()  # the first frame is taken at its time
        taken = service._paced_from
        assert taken is not None
        for inference in (0.002, 0.013, 0.3):
            service._paced_from = clock.monotonic()
            clock.advance(inference)
            assert clock.monotonic() + service._pace_timeout() == service._paced_from + 0.5
        clock.advance(0.4)  # later than one pace: the next point
        assert clock.monotonic() + service._pace_timeout() == service._paced_from + 1.0
    finally:
        service.close()
