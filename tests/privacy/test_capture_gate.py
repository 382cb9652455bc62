"""The capture gate: outside hours or in privacy mode the source is closed, so nothing is captured."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.analytics.dp import BudgetAccountant
from agent.clock import FakeClock
from agent.frame import Frame
from agent.privacy.gate import CaptureGate
from agent.privacy.privacy_mode import PrivacyMode
from agent.privacy.schedule import Schedule
from agent.privacy.settings import ScheduleConfig

MONDAY_0750_BERLIN = datetime(2026, 11, 23, 6, 50, tzinfo=UTC).timestamp()


class RecordingSource:
    """Follows the FrameSource contract: reading a closed source is an error, not an empty frame."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.is_open = False
        self.opens = 0
        self.closes = 0
        self.captured_at: list[float] = []

    def open(self) -> None:
        self.is_open = True
        self.opens += 1

    def close(self) -> None:
        self.is_open = False
        self.closes += 1

    def read(self) -> Frame:
        assert self.is_open, "read from a closed camera"
        self.captured_at.append(self.clock.time())
        return Frame(np.zeros((4, 4, 3), np.uint8), len(self.captured_at), 0.0, self.clock.time())


def run(gate: CaptureGate, source: RecordingSource, clock: FakeClock, seconds: int) -> None:
    """What the service loop does each second: update the gate, read only while it is open."""
    for _ in range(seconds):
        gate.update()
        if gate.capturing:
            source.read()
        clock.advance(1)


def test_camera_is_closed_outside_hours_and_in_privacy_mode() -> None:
    clock = FakeClock(start=MONDAY_0750_BERLIN)
    schedule = Schedule.from_config(ScheduleConfig(timezone="Europe/Berlin", hours={"mon": ["08:00-08:20"]}))
    mode = PrivacyMode(clock)
    source = RecordingSource(clock)
    gate = CaptureGate(source, mode, clock, schedule)

    assert gate.blocked_by() == "outside_schedule"
    assert gate.wake_at() == MONDAY_0750_BERLIN + 600  # 08:00 local
    run(gate, source, clock, 600)  # 07:50-08:00: before hours
    assert (source.opens, source.captured_at) == (0, [])
    run(gate, source, clock, 300)  # 08:00-08:05: capturing
    assert source.opens == 1
    assert len(source.captured_at) == 300
    mode.set("mqtt", True)
    run(gate, source, clock, 300)  # 08:05-08:10: privacy mode
    assert (source.closes, len(source.captured_at)) == (1, 300)
    mode.set("mqtt", False)
    run(gate, source, clock, 900)  # 08:10-08:25: capturing until 08:20, then closed
    assert (source.opens, source.closes) == (2, 2)
    assert len(source.captured_at) == 300 + 600
    assert max(source.captured_at) == MONDAY_0750_BERLIN + 1800 - 1  # last frame at 08:19:59
    assert not source.is_open


def test_changes_say_why_capture_stopped() -> None:
    clock = FakeClock(start=MONDAY_0750_BERLIN + 600)
    mode = PrivacyMode(clock)
    gate = CaptureGate(RecordingSource(clock), mode, clock)  # no schedule: all hours
    opened = gate.update()
    assert opened is not None
    assert opened.as_payload() == {"event": "capture", "ts": int(clock.time() * 1000), "state": "open",
                                   "reason": "active"}
    assert gate.update() is None
    mode.set("file", True)
    closed = gate.update()
    assert closed is not None
    assert (closed.capturing, closed.reason) == (False, "privacy_mode")
    assert gate.wake_at() is None


def test_a_spent_privacy_budget_closes_the_camera_until_the_next_utc_day(tmp_path: Path) -> None:
    """With DP on, once the day's budget cannot pay for another window nothing more could be
    published today: the camera (and its decoder) is released, and reopens at 00:00 UTC."""
    midnight = 1_700_006_400.0  # 2023-11-15 00:00 UTC
    clock = FakeClock(start=midnight + 23 * 3600)
    accountant = BudgetAccountant(tmp_path, daily_budget=1.0)
    source = RecordingSource(clock)
    gate = CaptureGate(source, PrivacyMode(clock), clock,
                       budget_left=lambda t: accountant.remaining_micro(t) >= 500_000)
    run(gate, source, clock, 60)
    assert source.opens == 1
    assert accountant.try_spend(0.5, clock.time())
    assert accountant.try_spend(0.5, clock.time())
    change = gate.update()
    assert change is not None
    assert (change.capturing, change.reason) == (False, "dp_budget")
    assert source.closes == 1
    run(gate, source, clock, 3600 - 60)  # until midnight: closed, nothing read
    assert len(source.captured_at) == 60
    run(gate, source, clock, 10)  # the next UTC day: a fresh budget
    assert source.opens == 2
    assert len(source.captured_at) == 70


def test_wake_at_stays_the_schedules_next_change_as_time_passes_and_the_schedule_is_replaced() -> None:
    """The service asks ``wake_at`` every loop turn, so the gate keeps the last answer while no
    change can have come: it must still be the schedule's own answer at every moment, past a
    change, after the clock steps back and after a reload replaces the schedule."""
    clock = FakeClock(start=MONDAY_0750_BERLIN)
    schedule = Schedule.from_config(ScheduleConfig(timezone="Europe/Berlin", hours={"mon": ["08:00-08:20"]}))
    gate = CaptureGate(RecordingSource(clock), PrivacyMode(clock), clock, schedule)

    def expected() -> float | None:
        nxt = gate.schedule.next_change(datetime.fromtimestamp(clock.time(), UTC)) if gate.schedule else None
        return None if nxt is None else nxt.timestamp()

    seen = []
    for step in [0, 299.5, 300, 0.5, 599, 1, 600, 1200, 0.25]:
        clock.advance(step)
        seen.append(gate.wake_at())
        assert seen[-1] == expected(), clock.time() - MONDAY_0750_BERLIN
    assert len(set(seen)) >= 3  # 08:00, 08:20, next Monday 08:00
    clock._wall = MONDAY_0750_BERLIN + 400  # stepped back (NTP) to 07:56:40, before 08:00 again
    assert gate.wake_at() == expected() == MONDAY_0750_BERLIN + 600
    longer = ScheduleConfig(timezone="Europe/Berlin", hours={"mon": ["07:55-09:00"]})
    gate.reschedule(Schedule.from_config(longer))
    assert gate.wake_at() == expected() == MONDAY_0750_BERLIN + 4200  # open now, until 09:00
