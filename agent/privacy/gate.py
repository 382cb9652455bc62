"""The capture gate: schedule, privacy mode and the privacy budget decide whether the camera is
open at all.

Outside active hours, in privacy mode, or once the day's differential-privacy budget cannot pay
for another window (nothing more could be published today, so nothing is analysed) the source
is *closed* (the device and its decoder are released), so no frame is captured rather than
captured and ignored. The service calls ``update`` each
loop turn and sleeps at most until ``wake_at``; ``update`` opens or closes the source on a
change and returns the change for the audit log and the state topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from agent.clock import Clock
from agent.privacy.privacy_mode import PrivacyMode
from agent.privacy.schedule import Schedule

logger = logging.getLogger(__name__)

Reason = Literal["privacy_mode", "outside_schedule", "dp_budget"]

BudgetLeft = Callable[[float], bool]
"""True while the privacy budget can still pay for a window at this Unix time."""


class Switchable(Protocol):
    """What the gate needs from a camera source."""

    def open(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GateChange:
    ts_ms: int
    capturing: bool
    reason: Reason | None
    """Why capture stopped; None when it (re)started."""

    def as_payload(self) -> dict[str, object]:
        return {"event": "capture", "ts": self.ts_ms, "state": "open" if self.capturing else "closed",
                "reason": self.reason or "active"}


class CaptureGate:
    """Opens the source only while the schedule is active, privacy mode is off and the privacy
    budget (when differential privacy is on) can pay for another window."""

    def __init__(self, source: Switchable, mode: PrivacyMode, clock: Clock,
                 schedule: Schedule | None = None, budget_left: BudgetLeft | None = None) -> None:
        self.source = source
        self.mode = mode
        self.clock = clock
        self.schedule = schedule
        self.budget_left = budget_left
        self.capturing = False
        self._wake: tuple[Schedule, float, float | None] | None = None
        """(schedule, asked at, answer) of the last ``wake_at``: the service asks every turn."""

    def reschedule(self, schedule: Schedule | None, budget_left: BudgetLeft | None = None) -> None:
        """A reloaded ``policy.schedule`` (and privacy budget): the next ``update`` opens or
        closes the source to match."""
        self.schedule = schedule
        self.budget_left = budget_left

    def blocked_by(self) -> Reason | None:
        """Why capture must be off now, or None when it may run."""
        if self.mode.paused:
            return "privacy_mode"
        if self.schedule is not None and not self.schedule.is_active(self._now()):
            return "outside_schedule"
        if self.budget_left is not None and not self.budget_left(self.clock.time()):
            return "dp_budget"
        return None

    def would_change(self) -> bool:
        """Whether ``update`` would open or close the source now."""
        return (self.blocked_by() is None) != self.capturing

    def update(self) -> GateChange | None:
        """Open or close the source to match the current state; return the change, if any."""
        reason = self.blocked_by()
        want = reason is None
        if want == self.capturing:
            return None
        if want:
            self.source.open()
        else:
            self.source.close()
        self.capturing = want
        change = GateChange(int(self.clock.time() * 1000), want, reason)
        fields = {} if reason is None else {"reason": reason}  # opened: nothing stands in the way
        logger.info("capture %s", "opened" if want else "closed", extra={"fields": fields})
        return change

    def wake_at(self) -> float | None:
        """Unix time of the next schedule change (None without a schedule or change)."""
        schedule = self.schedule
        if schedule is None:
            return None
        now, last = self.clock.time(), self._wake
        if last is not None and last[0] is schedule and last[1] <= now and (last[2] is None or now < last[2]):
            return last[2]  # still the next change: nothing flips before it
        nxt = schedule.next_change(self._now())
        at = None if nxt is None else nxt.timestamp()
        self._wake = (schedule, now, at)
        return at

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), UTC)
