"""Between the MQTT thread and the service loop: commands coalesced, rate-limited, de-duplicated.

A flood must not grow the audit log, the retained state or the number of threads, and must not
keep the camera opening and closing. So the gate holds at most one pending privacy-mode change
(the latest wins) and at most one pending checkpoint, and hands them to the loop no more often
than ``privacy_min_seconds`` and ``checkpoint_min_seconds``. A privacy command asking for the
state already pending or in force is a duplicate and ignored. A signed command (see
:mod:`agent.transport.commands`) must be fresh (``ts`` within ``replay_window_seconds`` of the
device clock) and its nonce unseen in that window, else it is a replay and ignored. It must
also be newer than every signed command accepted before and than the last plain ON
(``signed_after_ms``, which the service keeps across restarts): a signed OFF the device missed
while offline, captured by someone on the broker and replayed after the operator closed the
camera again, or one replayed after a restart (the nonces are gone), is stale. Memory is
constant: two slots and at most ``MAX_NONCES`` remembered nonces.

Pure logic: no paho import; thread-safe (``offer`` runs on paho's thread, ``take`` in the loop).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal

from agent.clock import Clock
from agent.transport.commands import Command

logger = logging.getLogger(__name__)

MAX_NONCES = 1024

Verdict = Literal["queued", "coalesced", "duplicate", "replayed", "stale"]


@dataclass(frozen=True, slots=True)
class GateSettings:
    privacy_min_seconds: float = 2.0
    checkpoint_min_seconds: float = 60.0
    replay_window_seconds: float = 60.0


class CommandGate:
    """``offer`` what arrives, ``take`` what is due; ``counts`` per verdict for the health topic."""

    def __init__(self, clock: Clock, settings: GateSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings or GateSettings()
        self._lock = threading.Lock()
        self._privacy: Command | None = None
        self._privacy_in_force = False  # what the mqtt source was last set to
        self._privacy_at: float | None = None
        self._checkpoint = False
        self._checkpoint_at: float | None = None
        self._nonces: OrderedDict[str, int] = OrderedDict()
        self._signed_after_ms: int | None = None
        """Device-clock ms a signed command's ``ts`` must exceed: the newest signed command
        accepted, or the time the last plain ON arrived, whichever is later."""
        self.counts: Counter[str] = Counter()

    @property
    def signed_after_ms(self) -> int | None:
        """What the service saves for the next start (``resume_order``)."""
        with self._lock:
            return self._signed_after_ms

    def resume_order(self, signed_after_ms: int | None) -> None:
        """The order the last run reached: without it, a signed command it accepted could be
        replayed once after a restart (its nonce forgotten) and turn the camera back on."""
        with self._lock:
            self._signed_after_ms = signed_after_ms

    def offer(self, command: Command) -> Verdict:
        with self._lock:
            verdict = self._offer(command)
            self.counts[verdict] += 1
        if verdict == "queued":
            logger.info("MQTT command %s queued", command.name, extra={"fields": {"on": command.on}})
        else:
            logger.debug("MQTT command %s %s", command.name, verdict)
        return verdict

    def _offer(self, command: Command) -> Verdict:
        if command.name == "privacy_mode" and command.on and not command.signed:
            self._order(int(self._clock.time() * 1000))  # a signed OFF signed before it is stale
        if command.signed:
            fresh = self._fresh(command)
            if fresh is not None:
                return fresh
        if command.name == "checkpoint":
            was, self._checkpoint = self._checkpoint, True
            return "coalesced" if was else "queued"
        wanted = self._privacy.on if self._privacy is not None else self._privacy_in_force
        if command.on == wanted:
            return "duplicate"
        was_pending = self._privacy is not None
        self._privacy = command
        if was_pending and command.on == self._privacy_in_force:
            self._privacy = None  # the change asked for is undone before it was applied
        return "coalesced" if was_pending else "queued"

    def _fresh(self, command: Command) -> Verdict | None:
        assert command.ts_ms is not None  # noqa: S101 - signed commands carry both
        assert command.nonce is not None  # noqa: S101
        now_ms = int(self._clock.time() * 1000)
        window_ms = int(self.settings.replay_window_seconds * 1000)
        if abs(now_ms - command.ts_ms) > window_ms:
            return "stale"
        while self._nonces and next(iter(self._nonces.values())) < now_ms - 2 * window_ms:
            self._nonces.popitem(last=False)
        if command.nonce in self._nonces:
            return "replayed"
        after = self._signed_after_ms
        if after is not None and after > now_ms + window_ms:  # the clock was stepped back since
            logger.warning("signed command order reset: the clock went back past the last command")
            after = self._signed_after_ms = None
        if after is not None and command.ts_ms <= after:
            return "stale"
        self._nonces[command.nonce] = command.ts_ms
        if len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        self._order(command.ts_ms)
        return None

    def _order(self, ms: int) -> None:
        if self._signed_after_ms is None or ms > self._signed_after_ms:
            self._signed_after_ms = ms

    def in_force(self, on: bool) -> None:
        """What the mqtt source is now, as the service holds it: a command it did not apply (the
        policy forbids the switch) or a reload that released the switch changes it, and a
        later command is judged against that state, not the one last handed out."""
        with self._lock:
            self._privacy_in_force = on

    def due(self) -> bool:
        """Whether ``take`` would hand a command on now (the service then waits for its pace
        point before it runs it: ``Service._signs_this_turn``)."""
        now, s = self._clock.monotonic(), self.settings
        with self._lock:
            privacy = self._privacy is not None and self._due(self._privacy_at, s.privacy_min_seconds, now)
            checkpoint = self._checkpoint and self._due(self._checkpoint_at, s.checkpoint_min_seconds, now)
            return privacy or checkpoint

    def take(self) -> list[Command]:
        """The commands due now: at most one privacy change and one checkpoint."""
        now = self._clock.monotonic()
        due: list[Command] = []
        with self._lock:
            gap = self.settings.privacy_min_seconds
            if self._privacy is not None and self._due(self._privacy_at, gap, now):
                due.append(self._privacy)
                self._privacy_in_force = bool(self._privacy.on)
                self._privacy, self._privacy_at = None, now
            gap = self.settings.checkpoint_min_seconds
            if self._checkpoint and self._due(self._checkpoint_at, gap, now):
                due.append(Command("checkpoint"))
                self._checkpoint, self._checkpoint_at = False, now
        return due

    @staticmethod
    def _due(last: float | None, interval: float, now: float) -> bool:
        return last is None or now - last >= interval
