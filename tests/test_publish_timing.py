"""A window's messages leave at a time that does not depend on the faces in view (found by
review): with a live camera they left after the first frame past the window's end had been
analysed, and inference takes longer the more faces there are, so the envelope's ``ts`` minus
the window's end told how many faces were in that frame, even for a window whose figures are
suppressed."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import agent.audit.log as audit_log
from agent.camera.base import SourceInfo
from agent.camera.grabber import Grabber
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.frame import Frame
from agent.service import PACE_S, Service
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

    def __init__(
        self, clock: FakeClock, faces: int, after: float, until: float = float("inf"),
        per_face: float = INFERENCE_S_PER_FACE,
    ) -> None:
        self.clock, self.faces, self.after, self.until = clock, faces, after, until
        self.per_face = per_face

    def analyze(self, pixels: Any, schedule: Any = None, frame: int = 0, *, lores: object = None
                ) -> list[FaceObservation]:
        n = self.faces if self.after <= self.clock.time() < self.until else 0
        self.clock.advance(self.per_face * n)
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
FRAME_S = 0.2
KEEPS_UP_S, FALLS_BEHIND_S = 0.005, 0.1
"""Inference per face: 5 ms, as measured, or 100 ms (a Pi Zero with full range), with which two
faces or more take the camera's whole frame interval or longer: the next frame is already
waiting when the inference ends."""


IN_INFERENCE_S = 0.005
"""An event (a signal, a command, the camera failing) comes 5 ms after a frame's time: while
that frame is analysed when it has faces and analysis keeps up, while the loop waits for the
next frame when it has none. The loop cannot foresee an event: it signs what the event asks for
at the pace point after the turn that finds it. An event that comes less than one analysis
before a pace point, while a frame is analysed, is therefore signed at the next pace point, and
which one it was tells whether an analysis was running then (docs/analytics.md). The events
here come more than 0.3 s, the longest analysis, before the next pace point."""


def tick(k: int) -> float:
    """Monotonic time of the camera's frame ``k``."""
    return PHASE_S + FRAME_S * k


class TickClock(FakeClock):
    """A fake clock whose wall time is always T0 plus its monotonic time, so that a time reached
    by different steps (an inference, then a wait) is the same float whatever the steps were.
    ``alarm``: something that happens at a time of its own (a signal), whatever the loop is doing
    then."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self._alarms: list[tuple[float, Callable[[], None]]] = []
        self.moved: Callable[[], None] = lambda: None
        """Called each time the clock moves (a camera delivering on its own schedule)."""

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.set(self._mono + seconds)

    def set(self, mono: float) -> None:
        self._mono, self._wall = mono, T0 + mono
        while self._alarms and self._alarms[0][0] <= mono:
            self._alarms.pop(0)[1]()
        self.moved()

    def alarm(self, mono: float, then: Callable[[], None]) -> None:
        self._alarms = sorted([*self._alarms, (mono, then)], key=lambda a: a[0])


class ScheduledCamera(LiveSource):
    """A 5 fps camera on its own schedule, whatever the loop does: frame k is read by the real
    grabber thread at ``tick(k)``, once ``deliver`` sees that time has come. A frame that comes
    while the loop is busy waits in the slot; a newer one replaces it (dropped), as on a real
    camera. ``fail`` unplugs it: every read from then on raises. Closed (privacy mode) and
    opened again, it goes on with the next frame's time."""

    def __init__(self, clock: TickClock) -> None:
        super().__init__(clock)
        self.cond = threading.Condition()
        self.released = self.opened_at = 0
        self.failed = self.stopped = False

    def opened(self) -> ScheduledCamera:
        """What the service's opener gives (``open_source`` opens it too)."""
        with self.cond:
            self.stopped = False
            self.pos = self.released = self.opened_at = self._due()
        return self

    def _due(self) -> int:
        """How many frames' times have come."""
        now = self.clock.monotonic()
        due = max(0, int((now - PHASE_S) / FRAME_S))  # then the division's rounding undone
        while tick(due) <= now:
            due += 1
        while due > 0 and tick(due - 1) > now:
            due -= 1
        return due

    def read(self) -> Frame | None:
        with self.cond:
            self.cond.wait_for(lambda: self.pos < self.released or self.stopped or self.failed)
            if self.failed:
                raise OSError("the camera is gone")
            if self.pos >= self.released:
                return None
            k, self.pos = self.pos, self.pos + 1
        pixels = np.full((36, 64, 3), 120, dtype=np.uint8)
        return Frame(pixels, k, tick(k), T0 + tick(k))

    def interrupt(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def deliver(self, grabber: Grabber) -> None:
        """Every frame whose time has come, each put in the slot before this returns (none once
        the camera failed)."""
        if self.failed:
            return
        with self.cond:
            self.released = max(self.released, self._due())
            self.cond.notify_all()
        want = self.released - self.opened_at
        deadline = time.monotonic() + 5.0
        while grabber.slot.tally().captured < want and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert grabber.slot.tally().captured >= want, "the grabber did not take the frames"


def live_run(
    tmp_path: Path, faces: int, stop_at: float, extra: str = "", *, window: int = 10,
    events: dict[float, Callable[[Service], None]] | None = None, fail_at: float | None = None,
    per_face: float = KEEPS_UP_S, on_start: Callable[[Service], None] | None = None, analytics: str = "",
) -> Path:
    """A live camera whose frames come on the camera's own schedule (not when the loop is
    ready), k = 5, ``faces`` faces in every frame, ``per_face`` seconds of inference each: every
    window suppressed. Everything else comes at a time of its own (seconds after T0), whatever
    the loop is doing then: the stop (SIGTERM from systemd) at ``stop_at``, ``events`` (a
    command from MQTT, a signal), the camera failing at ``fail_at``. ``on_start``: called once
    the service has started. ``analytics``: more of the ``analytics`` section, as flow YAML."""
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE + extra, window=window, k=5)
    if analytics:
        plain = f"analytics: {{window_seconds: {window}, min_people: 5"
        path.write_text(path.read_text().replace(plain, f"{plain}, {analytics}"))
    clock = TickClock(start=T0)
    pipeline = SlowerWithFaces(clock, faces, after=T0, per_face=per_face)
    camera = ScheduledCamera(clock)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: camera.opened(),
        pipeline_factory=lambda _c: pipeline,  # type: ignore[arg-type,return-value]
    )
    service.start()
    if on_start is not None:
        on_start(service)

    def delivered() -> None:
        """The frames whose time has come reach the grabber whatever the loop is doing (asleep
        to a pace point too), as a camera's do."""
        reader = service.feed._reader
        if isinstance(reader, Grabber) and not camera.failed:
            camera.deliver(reader)

    clock.moved = delivered

    def scheduled(wait: Any) -> Any:
        """Where the loop waits for the camera, the frames whose time has come are there, and
        the clock moves on to the next frame's time if that comes before the wait ends."""

        def paced(timeout: float = 0.5) -> Any:
            reader = service.feed._reader
            if camera.failed or not isinstance(reader, Grabber):
                return wait(timeout)
            camera.deliver(reader)
            if not reader.slot.tally().queued and timeout > 0:
                now = clock.monotonic()
                nxt = tick(camera.released)
                clock.set(nxt if nxt <= now + timeout else now + timeout)
                camera.deliver(reader)
                timeout = 0.0
            return wait(timeout)

        return paced

    for name in ("wait_for_frame", "next_frame"):
        setattr(service.feed, name, scheduled(getattr(service.feed, name)))

    def unplug() -> None:
        camera.fail()
        reader = service.feed._reader
        assert isinstance(reader, Grabber)
        assert reader.join(5)
        reader.slot.make_room()  # no frame taken before the failure waits

    for at, event in (events or {}).items():
        clock.alarm(at, lambda e=event: e(service))  # type: ignore[misc]
    if fail_at is not None:
        clock.alarm(fail_at, unplug)
    clock.alarm(stop_at, service.signals.stop.set)
    while not service.stop_requested:  # then ``run`` leaves its loop
        service.step()
    service.close()
    return tmp_path


def faceless_service(tmp_path: Path) -> tuple[Service, TickClock]:
    """A service on a live camera with no face in view, on a ``TickClock``, not started."""
    path = write_config(tmp_path, "/dev/video0", extra=NO_GATE)
    clock = TickClock(start=T0)
    service = Service(
        load_config(path), path, clock, opener=lambda s, o, c: LiveSource(c),
        pipeline_factory=lambda _c: SlowerWithFaces(clock, 0, after=T0),  # type: ignore[arg-type,return-value]
    )
    return service, clock


def checkpoint(service: Service) -> None:
    service._enqueue_command(Command("checkpoint"))


def _times(tmp: Path, suffix: str) -> list[int]:
    return [int(m["ts"]) for m in messages(tmp, suffix)]


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_a_suppressed_windows_message_time_does_not_depend_on_its_last_frames_faces(
    tmp_path: Path, per_face: float
) -> None:
    """The last frame of a window came 10 ms before its end; when its inference ran past the
    end, the window left right after it (ts - end: 190 ms with no face, 0 with two, 5 with three
    faces, 5 ms each), not at the next frame."""
    runs = {n: live_run(tmp_path / str(n), n, 10.55, per_face=per_face) for n in (0, 2, 3)}
    stats = {n: [ts for ts, m in zip(_times(t, "stats"), messages(t, "stats"), strict=True)
                 if m["body"]["window_start"] == T0] for n, t in runs.items()}
    assert all(m["body"]["suppressed"] for t in runs.values() for m in messages(t, "stats"))
    assert stats[0] == stats[2] == stats[3], stats
    assert len(stats[0]) == 1


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_a_checkpoint_due_by_time_is_not_signed_after_a_frames_inference(
    tmp_path: Path, per_face: float
) -> None:
    """With the default settings checkpoints come due by time: one was signed at the end of the
    loop turn, right after the frame's inference, so its ts (minus the camera's frame phase,
    which every stats message shows) told how many faces that frame held, window after
    suppressed window."""
    extra = "audit: {checkpoint_every_minutes: 1}\n"
    runs = {n: live_run(tmp_path / str(n), n, 130.05, extra, window=60, per_face=per_face) for n in (0, 1, 3)}
    checkpoints = {n: _times(t, "audit/checkpoint") for n, t in runs.items()}
    assert len(checkpoints[0]) >= 3, checkpoints
    assert checkpoints[0] == checkpoints[1] == checkpoints[3], checkpoints


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_what_a_command_makes_the_device_sign_does_not_time_the_frame_before_it(
    tmp_path: Path, per_face: float
) -> None:
    """Commands, privacy-mode changes and reconnects were handled at the top of the loop turn,
    right after the last frame's inference: anyone allowed to send ``checkpoint`` could ask,
    once a second, for a signed message whose ts (minus the frame phase) told how many faces the
    frame just analysed held."""
    events = {tick(20) + IN_INFERENCE_S: checkpoint}
    runs = {n: live_run(tmp_path / str(n), n, 6.05, events=events, per_face=per_face) for n in (0, 2)}
    checkpoints = {n: _times(t, "audit/checkpoint") for n, t in runs.items()}
    assert len(checkpoints[0]) == 2, checkpoints  # the one asked for (at most one a minute) and the stop's
    assert checkpoints[0] == checkpoints[2], checkpoints


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_what_the_stop_signs_does_not_time_the_inference_it_came_during(
    tmp_path: Path, per_face: float
) -> None:
    """SIGTERM (systemd stopping the unit) while a frame was analysed: the stop flushed the open
    window and signed its checkpoint right after that inference, so their ts (minus the frame
    phase) told how many faces the last frame held."""
    runs = {
        n: live_run(tmp_path / str(n), n, tick(27) + IN_INFERENCE_S, per_face=per_face) for n in (0, 2, 3)
    }
    for suffix in ("stats", "audit/checkpoint"):
        times = {n: _times(t, suffix) for n, t in runs.items()}
        assert times[0], (suffix, times)
        assert times[0] == times[2] == times[3], (suffix, times)


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_the_turn_after_a_camera_fails_does_not_time_the_inference_before_it(
    tmp_path: Path, per_face: float
) -> None:
    """A camera that fails ends its grabber at once, so the next turn's wait for a frame ended
    right after the last inference: what that turn signed (the health message saying the camera
    is lost, a due window) and everything after it told how many faces the last frame held."""
    fail_at = tick(27) + IN_INFERENCE_S
    runs = {n: live_run(tmp_path / str(n), n, 6.55, fail_at=fail_at, per_face=per_face) for n in (0, 2, 3)}
    for suffix in ("health", "stats", "audit/checkpoint"):
        times = {n: _times(t, suffix) for n, t in runs.items()}
        assert times[0], (suffix, times)
        assert times[0] == times[2] == times[3], (suffix, times)
    assert any(m["body"].get("camera") == "reconnecting" for m in messages(runs[0], "health"))


def test_a_turn_without_a_new_frame_waits_until_a_time_no_inference_moves(tmp_path: Path) -> None:
    """With a camera slower than the loop's wait (camera.fps 1, or one that stalls), the wait
    timed out 0.5 s after the last inference ended, and what the turn signed then told how long
    that inference took. Counted from when the last frame was taken, it still moved with the
    inferences before, once analysis was behind the camera: the frame was taken when the last
    one ended. It now ends at the next pace point, whatever came before."""
    service, clock = faceless_service(tmp_path)
    service.start()
    try:
        for taken in (0.19, 0.25, 0.31):  # the frame taken on time, or after a late inference
            for inference in (0.002, 0.013, 0.15):
                clock.set(taken + inference)
                assert clock.monotonic() + service._pace_timeout() == 0.5
        clock.set(0.59)  # later than one pace: the next point
        assert clock.monotonic() + service._pace_timeout() == 1.0
    finally:
        service.close()


def test_everything_the_loop_signs_it_signs_at_a_pace_point(tmp_path: Path) -> None:
    """Whatever makes the device sign or record (a window, a checkpoint by time, commands to
    switch privacy mode and to sign a checkpoint, SIGUSR1, SIGHUP, a flag file, the stop),
    each message and audit entry is made at a pace point, with analysis behind the camera (three
    faces, 0.3 s each frame): ``Service._signs_this_turn`` asks every one of them, and one it
    missed would be made right after an inference. The events come at times of their own."""
    flag = tmp_path / "privacy-flag"
    extra = (
        "audit: {checkpoint_every_minutes: 1}\n"
        f"policy: {{privacy_mode: {{flag_file: '{flag}', poll_seconds: 1}}}}\n"
    )
    made: list[tuple[str, float]] = []

    def record(service: Service) -> None:
        publish, append = service.publisher.publish, service.audit.append

        def published(suffix: str, *args: Any, **kwargs: Any) -> Any:
            made.append((suffix, service.clock.monotonic()))
            return publish(suffix, *args, **kwargs)

        def appended(kind: str, fields: Any) -> int:
            made.append((f"audit {kind}", service.clock.monotonic()))
            return append(kind, fields)

        service.publisher.publish = published  # type: ignore[method-assign]
        service.audit.append = appended  # type: ignore[method-assign]

    def privacy(on: bool) -> Callable[[Service], None]:
        return lambda s: s._enqueue_command(Command("privacy_mode", on=on))

    events: dict[float, Callable[[Service], None]] = {
        3.07: checkpoint,
        7.33: privacy(True),
        9.71: privacy(False),
        14.13: lambda s: s.signals.toggle.received(1),  # SIGUSR1: privacy mode on
        17.29: lambda s: s.signals.toggle.received(1),  # and off again
        21.77: lambda s: s.signals.request_reload(),  # SIGHUP
        25.41: lambda s: flag.touch(),
        29.03: lambda s: flag.unlink(),
    }
    live_run(tmp_path, 3, 75.13, extra, window=10, events=events, per_face=FALLS_BEHIND_S, on_start=record)
    kinds = {kind for kind, _ in made}
    assert {"stats", "audit/checkpoint", "privacy_mode", "privacy", "audit privacy_mode"} <= kinds, kinds
    off_pace = [(kind, round(t, 3)) for kind, t in made if t % PACE_S != 0]
    assert not off_pace, off_pace


def test_what_the_audit_log_held_for_a_full_disk_is_signed_at_a_pace_point(tmp_path: Path) -> None:
    """Once the disk took writes again, the entries the audit log held in memory and the
    checkpoint it could not write were signed in the next turn's work, right after the inference
    (found by review: 74.79 / 74.79 / 74.90 / 75.00 s with 0-3 faces)."""
    full = [False]
    write = audit_log.append_durable

    def refusing(fd: int, data: bytes) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(fd, data)

    def fill(_s: Service) -> None:
        full[0] = True

    def free(_s: Service) -> None:
        full[0] = False

    extra = "audit: {checkpoint_every_minutes: 1}\n"
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_log, "append_durable", refusing)
        for n in (0, 1, 2, 3):
            full[0] = False
            runs[n] = live_run(
                tmp_path / str(n), n, 80.13, extra, events={50.03: fill, 74.77: free}, per_face=FALLS_BEHIND_S
            )
    checkpoints = {n: _times(t, "audit/checkpoint") for n, t in runs.items()}
    assert checkpoints[0] == checkpoints[1] == checkpoints[2] == checkpoints[3], checkpoints
    recovered = [ts for ts in checkpoints[0] if 74_770 < ts - T0 * 1000 < 80_000]
    assert recovered, checkpoints[0]
    assert all((ts - T0 * 1000) % 500 == 0 for ts in checkpoints[0]), checkpoints[0]


def test_an_event_that_comes_after_the_turn_asked_waits_for_the_next_turns_pace_point(tmp_path: Path) -> None:
    """A command that came between the turn's question (nothing to sign: no pace point) and its
    handling was handled in that turn, right after the inference, so its checkpoint's ts was
    the inference's end (found by review: 3.39 s with 0-2 faces, 3.49 s with 3). It now waits
    for the next turn, which signs at a pace point. (Which pace point still depends on whether
    an inference ran then: the one bit docs/analytics.md owns up to.)"""

    def late(service: Service) -> None:
        probe, fired = service._signs_this_turn, []

        def asked() -> bool:
            due = probe()
            if not due and not fired and service.clock.monotonic() > 3.25:
                fired.append(True)
                service._enqueue_command(Command("checkpoint"))  # the MQTT thread, a few us later
            return due

        service._signs_this_turn = asked  # type: ignore[method-assign]

    for n in (0, 1, 2, 3):
        checkpoints = _times(live_run(tmp_path / str(n), n, 6.05, per_face=FALLS_BEHIND_S, on_start=late),
                             "audit/checkpoint")
        assert len(checkpoints) == 2, checkpoints  # the one asked for and the stop's
        assert all((ts - T0 * 1000) % 500 == 0 for ts in checkpoints), (n, checkpoints)


def test_one_long_analysis_neither_idles_the_loop_for_windows_nor_holds_up_a_stop(tmp_path: Path) -> None:
    """The lookahead is twice the longest recent analysis: one of 6 s (a cold start, a Pi
    swapping) made it 12 s, longer than a 10 s window, so every turn slept to the next window's
    end (one frame analysed per window for the next 100), and a stop that came during that sleep
    waited for it to end (15 s; systemd kills the agent 20 s after SIGTERM). Found by review."""
    carried: list[float] = []
    closed: list[float] = []
    slow: list[float] = []

    def slow_once(service: Service) -> None:
        carry, close = service.route.carry, service.close

        def carrying(frame: Frame) -> Any:
            carried.append(service.clock.monotonic())
            if carried[-1] >= 45.0 and not slow:
                slow.append(carried[-1])
                service.clock.advance(6.0)
            return carry(frame)

        def closing() -> None:
            closed.append(service.clock.monotonic())
            close()

        service.route.carry = carrying  # type: ignore[method-assign]
        service.close = closing  # type: ignore[method-assign]

    stop_at = 58.73  # within the lookahead (at most 2 s) before the window that ends at 60 s
    live_run(tmp_path, 0, stop_at, on_start=slow_once)
    assert slow, "no analysis was slow"
    after = [t for t in carried if slow[0] + 6.0 <= t < 58.0]
    assert len(after) >= 25, f"{len(after)} frames analysed from {slow[0] + 6.0:.2f} to 58 s at 5 frames/s"
    assert closed, "the service was not closed"
    assert closed[0] - stop_at <= PACE_S, f"the stop came at {stop_at} s, the close began at {closed[0]} s"


def test_a_stop_that_comes_after_a_turns_last_look_is_signed_at_a_pace_point(tmp_path: Path) -> None:
    """SIGTERM right after a turn looked for a stop for the last time (a few bytecodes before
    ``run`` looks again) went straight to ``close``, which signs the open window and the stop's
    checkpoint then: right after that turn's inference (found by review)."""
    service, clock = faceless_service(tmp_path)
    closed: list[float] = []
    close = service.close

    def turn() -> None:  # a turn that ends 0.137 s into a pace, then the signal
        clock.set(3.137)
        service.signals.stop.set()

    def closing() -> None:
        closed.append(clock.monotonic())
        close()

    service.step = turn  # type: ignore[method-assign]
    service.close = closing  # type: ignore[method-assign]
    assert service.feed.live
    assert service.run() == 0
    assert closed == [3.5]


def test_a_stop_that_comes_while_the_turn_asks_is_still_signed_at_a_pace_point(tmp_path: Path) -> None:
    """A stop that came after the turn read it and before its wait for a window's pace point
    ended that wait before it began, and the turn said it was at a pace point: the stop's
    window and checkpoint were signed at the end of the inference before (found by review)."""
    service, clock = faceless_service(tmp_path)
    service.start()
    try:
        service.step()  # the first window is open: it ends at 10 s
        clock.set(9.637)  # an inference ended here
        ask = service._signs_this_turn

        def stop_meanwhile() -> bool:
            service.signals.stop.set()  # SIGTERM between two of the questions
            return ask()

        service._signs_this_turn = stop_meanwhile  # type: ignore[method-assign]
        assert service._pace() == (True, True)
        assert clock.monotonic() % PACE_S == 0, clock.monotonic()
    finally:
        service.close()


def test_the_flag_file_is_looked_at_once_per_interval_in_turns_that_sign_nothing(tmp_path: Path) -> None:
    """Asking whether the flag file changed counts as looking at it: asked every turn, it was
    looked at on every turn until one signed (found by review)."""
    flag = tmp_path / "privacy-flag"
    path = write_config(tmp_path, "/dev/video0", extra=f"policy: {{privacy_mode: {{flag_file: '{flag}'}}}}\n")
    clock = TickClock(start=T0)
    service = Service(load_config(path), path, clock, opener=lambda s, o, c: LiveSource(c))
    poller = service.flag_poller
    assert poller is not None
    looks: list[float] = []

    class Watched(type(flag)):  # type: ignore[misc]
        def exists(self) -> bool:  # type: ignore[override]
            looks.append(clock.monotonic())
            return super().exists()

    poller.path = Watched(flag)
    try:
        for i in range(40):
            clock.set(0.5 + 0.05 * i)
            poller.would_change()
        assert 2 <= len(looks) <= 3, looks  # 40 questions over 2 s, the interval 1 s
        flag.touch()
        clock.set(3.5)
        assert poller.would_change()
        assert poller.poll() is not None
    finally:
        service.close()


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_the_window_that_spends_the_days_privacy_budget_closes_the_camera_at_its_own_pace_point(
    tmp_path: Path, per_face: float
) -> None:
    """The second window spends the day's budget (0.5 of 1.0 each). The gate was applied before
    the windows closed, so the camera closed only in a later turn, after the inference of a frame
    taken with the budget spent: its "privacy" message came 0 / 0.5 / 1.0 s after the window's
    with 0 / 1 / 6 faces (falls-behind), telling how many faces that frame held."""
    analysed: dict[int, list[float]] = {}

    def counting(n: int) -> Callable[[Service], None]:
        def wrap(service: Service) -> None:
            pipeline = service.stage.pipeline
            analyze = pipeline.analyze

            def timed(*args: Any, **kwargs: Any) -> Any:
                analysed.setdefault(n, []).append(service.clock.monotonic())
                return analyze(*args, **kwargs)

            pipeline.analyze = timed  # type: ignore[method-assign]
        return wrap

    dp = "dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 1}"
    runs = {n: live_run(tmp_path / str(n), n, 26.13, per_face=per_face, on_start=counting(n), analytics=dp)
            for n in (0, 1, 6)}
    closed = {n: [(m["ts"], m["body"]) for m in messages(t, "privacy") if not m["body"]["capturing"]]
              for n, t in runs.items()}
    spent = {n: [m["ts"] for m in messages(t, "stats") if m["body"]["window_end"] == T0 + 20]
             for n, t in runs.items()}
    assert closed[0] == closed[1] == closed[6], closed
    assert spent[0] == spent[1] == spent[6], spent
    assert [ts for ts, _ in closed[0]] == spent[0], (closed[0], spent[0])
    assert closed[0][0][1] == {"capturing": False, "reason": "dp_budget"}
    window_end_mono = 20.0
    assert all(max(t) < window_end_mono + FRAME_S for t in analysed.values()), analysed


def _sent_at(service: Service, sent: list[tuple[str, float]], refuse: list[bool]) -> None:
    """Record when each message reaches the (only) output; while ``refuse[0]`` the output
    refuses it, as a full disk does."""
    (output,) = service.outputs
    send = output.send

    def recorded(message: Any) -> None:
        if refuse[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        send(message)
        sent.append((message.topic.rsplit("/", 1)[-1], service.clock.monotonic()))

    output.send = recorded  # type: ignore[method-assign]


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_after_a_reconnect_the_retained_states_are_signed_again_at_the_next_pace_point(
    tmp_path: Path, per_face: float
) -> None:
    """A broker that came back without its retained messages gets the key and the privacy state
    again at the first pace point after the reconnect (``_signs_this_turn`` asks the outputs'
    connect count): not at the next window's end, and not right after an inference."""
    connects, sent = [1], []

    def connected(service: Service) -> None:
        service._broker_connects = lambda: connects[0]  # type: ignore[method-assign]
        service._connects = 1  # the run's first connect, made at start
        _sent_at(service, sent, [False])

    def reconnect(_s: Service) -> None:
        connects[0] = 2

    reconnected = 12.37
    live_run(tmp_path, 3, 16.13, events={reconnected: reconnect}, per_face=per_face, on_start=connected)
    again = [(suffix, t) for suffix, t in sent if suffix in ("key", "privacy_mode") and t > reconnected]
    assert {suffix for suffix, _ in again} == {"key", "privacy_mode"}, sent
    assert all(t % PACE_S == 0 and t - reconnected < 2 * PACE_S for _, t in again), again


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_a_message_an_output_refused_is_handed_on_at_the_first_pace_point_it_is_taken(
    tmp_path: Path, per_face: float
) -> None:
    """The second window's messages come while the disk is full and wait in memory; once the
    disk takes writes again they are handed on at the next pace point (``_signs_this_turn``
    asks ``publisher.held``), not at the next window's end."""
    refuse, sent = [False], []

    def full(_s: Service) -> None:
        refuse[0] = True

    def freed(_s: Service) -> None:
        refuse[0] = False

    events = {15.03: full, 21.37: freed}
    live_run(tmp_path, 3, 26.13, events=events, per_face=per_face,
             on_start=lambda s: _sent_at(s, sent, refuse))
    late = [(suffix, t) for suffix, t in sent if 15.03 < t < 26.0]
    assert "stats" in {suffix for suffix, _ in late}, sent
    assert all(t % PACE_S == 0 and 21.37 < t < 21.37 + 2 * PACE_S for _, t in late), late


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_the_gate_follows_the_privacy_budget_at_the_next_pace_point(tmp_path: Path, per_face: float) -> None:
    """The budget runs out outside a window's close (here: by hand) and comes back at 00:00 UTC:
    neither is a timed task the loop knows ahead, so ``_signs_this_turn`` asks the gate
    (``CaptureGate.would_change``). The camera closes and opens again at the first pace point
    after each, not at the next window's end."""
    left = [True]

    def budget(service: Service) -> None:
        service.gate.budget_left = lambda _now: left[0]

    def spent(_s: Service) -> None:
        left[0] = False

    def new_day(_s: Service) -> None:
        left[0] = True

    events = {3.07: spent, 12.37: new_day}
    run = live_run(tmp_path, 3, 16.13, events=events, per_face=per_face, on_start=budget)
    changes = [((m["ts"] - T0 * 1000) / 1000, m["body"]) for m in messages(run, "privacy")][1:]
    assert [body for _, body in changes] == [
        {"capturing": False, "reason": "dp_budget"}, {"capturing": True, "reason": "active"}
    ], changes
    for (at, _), event in zip(changes, events, strict=True):
        assert at % PACE_S == 0, changes
        assert event < at < event + 2 * PACE_S, changes


def _reload(service: Service) -> None:
    """SIGHUP with a key changed that closes the open window (a new aggregator)."""
    path = service.config_path
    assert path is not None
    path.write_text(path.read_text().replace("min_people: 5", "min_people: 5, health_period_seconds: 600"))
    service.signals.request_reload()


@pytest.mark.parametrize("reload_at", [None, 20.2], ids=["", "reload-at-its-end"])
@pytest.mark.parametrize(
    "analytics", ["small_window: merge", "dp: {enabled: true, epsilon_per_window: 0.5, daily_budget: 10}"],
    ids=["merge", "dp"],
)
def test_a_window_the_camera_opened_late_in_is_labelled_and_charged_whatever_the_faces_before(
    tmp_path: Path, analytics: str, reload_at: float | None
) -> None:
    """Privacy mode is switched off 1.37 s before a window ends. Whether that window then had a
    frame analysed depended on the lookahead (twice the longest recent analysis): with six faces
    in the windows before (0.6 s each) the loop took none before the end, and a window with no
    frame analysed was labelled ``below_k`` instead of ``merged`` and spent no privacy budget,
    so every later window's ``budget_left_micro`` told the faces (found by review). Whether the
    camera gave a frame in the window is the rule now, and it does not depend on the faces."""

    def privacy(on: bool) -> Callable[[Service], None]:
        return lambda s: s._enqueue_command(Command("privacy_mode", on=on))

    events = {8.07: privacy(True), 18.63: privacy(False)}
    if reload_at is not None:  # handled at the window's own pace point: it counted the frames into the next
        events[reload_at] = _reload
    dp = analytics.startswith("dp")
    seen = {}
    for n in (0, 1, 3, 6):
        run = live_run(tmp_path / str(n), n, 35.13, events=events, per_face=FALLS_BEHIND_S,
                       analytics=analytics)
        bodies = [m["body"] for m in messages(run, "stats")]
        seen[n] = [  # with noise, whether a window is withheld is the noisy count's to say
            (b["window_start"] - T0, None if dp else b["suppressed"], b["budget_left_micro"]) for b in bodies
        ]
    assert seen[0] == seen[1] == seen[3] == seen[6], seen
    before, late = (next(w for w in seen[0] if w[0] == start) for start in (0, 10))
    if not dp:  # a reload closes the window as final: no carry, so below_k, whatever the faces
        assert late[1] == ("merged" if reload_at is None else "below_k"), seen[0]
    else:  # the window was open to the camera: it is charged, as any window the camera saw
        assert before[2] - late[2] == 500_000, seen[0]


@pytest.mark.parametrize("per_face", [KEEPS_UP_S, FALLS_BEHIND_S], ids=["keeps-up", "falls-behind"])
def test_a_start_that_deferred_the_date_checks_runs_them_at_the_pace_point_after_the_clock_is_set(
    tmp_path: Path, per_face: float
) -> None:
    """The deferred check ran only in a turn that signed for another reason: the clock set at
    12.37 s was checked at the next window's end (20.5 s), and with hour-long windows the camera
    went on under a refused config for up to an hour (found by review)."""
    flag, checked = tmp_path / "synchronized", []

    def deferred(service: Service) -> None:
        dates = service._dates
        dates.deferred, dates._flag = True, flag  # as a start before NTP with a date to check
        recheck = dates.recheck

        def timed(cfg: Any) -> None:
            was = dates.deferred
            recheck(cfg)
            if was and not dates.deferred:
                checked.append(service.clock.monotonic())

        dates.recheck = timed  # type: ignore[method-assign]

    live_run(tmp_path / "run", 3, 16.13, events={12.37: lambda _s: flag.touch()}, per_face=per_face,
             on_start=deferred)
    assert len(checked) == 1, checked
    assert checked[0] % PACE_S == 0, checked
    assert 12.37 < checked[0] < 12.37 + 2 * PACE_S, checked
