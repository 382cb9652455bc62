"""What the spool dropped, for the audit log: summed per reason, one entry at most every 5 s.

At its size cap the spool drops a row for every message put during an outage. One audit entry
per drop fed itself with ``audit.checkpoint_every_entries: 1``: the entry made a checkpoint due,
the checkpoint's message dropped the next row, whose entry made the next checkpoint due, and the
publish never returned (tests/transport/test_spool_full_checkpoint.py). Summed here, a drop in the
5 s after an entry waits for the next one (the service loop asks every turn, and at its stop),
so a checkpoint's own drop can no longer make another checkpoint due at once. Every count
reaches the log before it closes; a process killed (or a power loss) loses the counts it held,
at most 5 s of drops. Holding back only the drops a tally's own entry caused would not do: the
checkpoint it makes due is published by whichever thread is delivering checkpoints, after the
entry's append has returned.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from agent.clock import Clock
from agent.transport.spool_types import DropReport

EVERY_S = 5.0
"""Least time between two audit entries for drops (per tally, every reason in one turn): with a
checkpoint after every entry and a full spool, one entry and one checkpoint each 5 s at most."""


def drop_message(count: int, size: int, reason: str) -> str:
    """The audit entry's text; its first word is the number of messages (tests and auditors sum it)."""
    return f"{count} unsent message(s), {size} bytes, dropped: {reason}"


class DropTally:
    """Sums ``DropReport``s from any thread; ``record`` writes through ``append`` (an audit append
    of an ``error`` entry with code ``spool_dropped``), never while holding its lock, so a drop
    reported from inside that append (the checkpoint it made due) only adds to the sums."""

    def __init__(self, append: Callable[[str], None], clock: Clock, every: float = EVERY_S) -> None:
        if every <= 0:
            raise ValueError(f"every must be positive (found {every}): a drop could record itself endlessly")
        self._append = append
        self._clock = clock
        self._every = every
        self._lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        """reason -> [messages, bytes] not yet in the audit log."""
        self._last: float | None = None
        """Monotonic time of the last entry written, None before the first."""

    def report(self, report: DropReport) -> None:
        """The spool's ``on_drop``: summed, and written at once unless an entry was written in
        the last ``every`` seconds."""
        with self._lock:
            sums = self._pending.setdefault(report.reason, [0, 0])
            sums[0] += report.count
            sums[1] += report.bytes
        self.record()

    def record(self, *, force: bool = False) -> None:
        """Write what is pending if the last entry is ``every`` seconds old (or ``force``: the
        stop, before the audit log closes)."""
        with self._lock:
            now = self._clock.monotonic()
            due = self._last is None or now - self._last >= self._every
            if not self._pending or not (force or due):
                return
            pending, self._pending = self._pending, {}
            self._last = now
        for reason, (count, size) in sorted(pending.items()):
            self._append(drop_message(count, size, reason))

    def due_at(self) -> float | None:
        """Monotonic time ``record`` will write the drops pending (None: none pending)."""
        with self._lock:
            if not self._pending:
                return None
            return -math.inf if self._last is None else self._last + self._every

    def due(self) -> bool:
        """Whether ``record`` would write an entry now."""
        at = self.due_at()
        return at is not None and self._clock.monotonic() >= at

    @property
    def pending(self) -> int:
        """Dropped messages not yet in the audit log."""
        with self._lock:
            return sum(count for count, _ in self._pending.values())
