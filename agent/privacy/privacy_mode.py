"""Privacy mode: any one source that is ON pauses capture (the camera is closed).

Sources: the MQTT switch (``cmd/privacy_mode/set``), a flag file that pauses while it exists,
and SIGUSR1, which toggles. ``PrivacyMode`` is plain state; every change returns a
``PrivacyModeEvent`` the service publishes (``privacy_mode`` state topic) and audits. A
signal handler must not take locks the interrupted thread may hold, so SIGUSR1 only counts
(``SignalToggle``) and the main loop applies the count.

The MQTT switch and the signal have no record of their own (the flag file is one), so the
service keeps them in ``state_dir/privacy_mode.json`` (``load_held`` / ``save_held``): a restart
(power cut, crash, watchdog) must not reopen a camera an operator closed.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from agent.atomic import write_atomic
from agent.clock import Clock
from agent.errors import PayloadError

logger = logging.getLogger(__name__)

Source = Literal["mqtt", "file", "signal"]
SOURCES: tuple[Source, ...] = ("mqtt", "file", "signal")
HELD: tuple[Source, ...] = ("mqtt", "signal")
"""The sources kept in ``HELD_NAME`` across restarts (the flag file is its own record)."""
HELD_NAME = "privacy_mode.json"


@dataclass(frozen=True, slots=True)
class PrivacyModeEvent:
    """One change of a source; ``paused`` is the combined state after it."""

    ts_ms: int
    source: Source
    source_on: bool
    paused: bool
    was_paused: bool

    def as_payload(self) -> dict[str, object]:
        """Integers and strings only, for the signed state message and the audit log."""
        return {
            "ts": self.ts_ms,
            "state": "ON" if self.paused else "OFF",
            "changed_by": self.source,
            "source_state": "ON" if self.source_on else "OFF",
        }

    def audit_fields(self) -> dict[str, str]:
        """The ``privacy_mode`` audit entry: the mode now in force and what changed it."""
        return {"mode": "on" if self.paused else "off", "source": self.source}


class PrivacyMode:
    """Combined privacy-mode state; thread-safe (MQTT callbacks run on paho's thread)."""

    def __init__(self, clock: Clock, initial: dict[Source, bool] | None = None) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._on: dict[Source, bool] = dict.fromkeys(SOURCES, False) | (initial or {})

    @property
    def paused(self) -> bool:
        with self._lock:
            return any(self._on.values())

    def sources_on(self) -> list[Source]:
        """Which sources currently pause capture, for the state message."""
        with self._lock:
            return [s for s in SOURCES if self._on[s]]

    def set(self, source: Source, on: bool) -> PrivacyModeEvent | None:
        """Set one source; return the event, or None when nothing changed."""
        if source not in SOURCES:
            raise ValueError(f"unknown privacy-mode source {source!r}; one of {', '.join(SOURCES)}")
        with self._lock:
            if self._on[source] == on:
                return None
            was = any(self._on.values())
            self._on[source] = on
            now = any(self._on.values())
        event = PrivacyModeEvent(int(self.clock.time() * 1000), source, on, now, was)
        logger.info(
            "privacy mode source changed",
            extra={"fields": {"source": source, "source_on": on, "paused": now}},
        )
        return event

    def state_payload(self) -> dict[str, object]:
        """The retained state message at start, before any change: a switch (Home Assistant)
        shows the mode in force instead of "unknown" or a stale retained state."""
        state = "ON" if self.paused else "OFF"
        ts = int(self.clock.time() * 1000)
        return {"ts": ts, "state": state, "changed_by": "start", "source_state": state}

    def held(self) -> dict[str, bool]:
        """The sources that outlive a restart, as ``save_held`` writes them."""
        with self._lock:
            return {s: self._on[s] for s in HELD}

    def toggle(self, source: Source) -> PrivacyModeEvent | None:
        with self._lock:
            current = self._on[source]
        return self.set(source, not current)


ORDER_KEY = "signed_after_ms"
"""The command gate's order (``CommandGate.signed_after_ms``), kept with the switches."""


def load_held(state_dir: Path) -> tuple[dict[Source, bool], int | None]:
    """The MQTT switch and the signal as the last run left them (both off without a file), and
    the signed-command order it reached. PayloadError naming the file when it is damaged:
    guessing "off" would reopen the camera."""
    path = state_dir / HELD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:  # a folder, not UTF-8
        raise PayloadError(f"{path}: cannot read the privacy mode state: {exc}") from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        data = exc
    if not _well_formed(data):
        raise PayloadError(
            f'{path}: the privacy mode state is damaged (expected {{"mqtt": true|false, "signal": '
            f'true|false, "{ORDER_KEY}": milliseconds|null}}); the agent will not guess whether the '
            "camera may be on: restore it, or remove it knowingly (both switches then start off)"
        )
    order = data.get(ORDER_KEY)
    return {s: bool(data[s]) for s in HELD}, order if isinstance(order, int) else None


def _well_formed(data: object) -> bool:
    if not isinstance(data, dict) or not set(HELD) <= set(data) <= {*HELD, ORDER_KEY}:
        return False
    order = data.get(ORDER_KEY)
    in_range = order is None or (type(order) is int and 0 <= order < 2**63)
    return all(type(data[s]) is bool for s in HELD) and in_range


def save_held(state_dir: Path, mode: PrivacyMode, signed_after_ms: int | None = None) -> None:
    """Write what ``load_held`` reads, atomically (a crash leaves the old or the new state)."""
    data: dict[str, object] = {**mode.held(), ORDER_KEY: signed_after_ms}
    write_atomic(state_dir / HELD_NAME, (json.dumps(data, sort_keys=True) + "\n").encode("ascii"))


def parse_switch(payload: bytes) -> bool:
    """The MQTT switch payload: ON or OFF (Home Assistant's defaults), case-insensitive."""
    text = payload.decode("utf-8", errors="replace").strip().upper()
    if text in ("ON", "1", "TRUE"):
        return True
    if text in ("OFF", "0", "FALSE"):
        return False
    raise PayloadError(f"privacy mode switch: payload {text[:20]!r} is not ON or OFF")


class FlagFilePoller:
    """Turns the ``file`` source on while a flag file exists.

    ``poll`` may be called every loop turn: with a clock and an interval it looks at the file
    at most once per ``interval_s`` (``policy.privacy_mode.poll_seconds``), otherwise every call.
    """

    def __init__(self, path: Path, mode: PrivacyMode, clock: Clock | None = None,
                 interval_s: float = 0.0) -> None:
        self.path = path
        self.mode = mode
        self.clock = clock
        self.interval_s = interval_s
        self._next: float | None = None

    def would_change(self) -> bool:
        """Whether ``poll`` would switch the ``file`` source now. Looking counts as a poll when
        nothing changed, so the file is still looked at once per interval."""
        clock, nxt = self.clock, self._next
        if clock is not None and self.interval_s > 0 and nxt is not None and clock.monotonic() < nxt:
            return False
        changed = self.path.exists() != ("file" in self.mode.sources_on())
        if not changed and clock is not None and self.interval_s > 0:
            self._next = clock.monotonic() + self.interval_s
        return changed

    def poll(self) -> PrivacyModeEvent | None:
        if self.clock is not None and self.interval_s > 0:
            now = self.clock.monotonic()
            if self._next is not None and now < self._next:
                return None
            self._next = now + self.interval_s
        return self.mode.set("file", self.path.exists())


class SignalToggle:
    """Records SIGUSR1 deliveries in the handler; ``drain`` applies them from the main loop."""

    def __init__(self, mode: PrivacyMode) -> None:
        self.mode = mode
        self._received: list[int] = []
        self._previous: signal._HANDLER = None
        self.ignored = 0
        """SIGUSR1s forgotten because the policy does not let the signal switch privacy mode."""

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)  # one bytecode: safe against a signal arriving in drain

    def received(self, count: int) -> None:
        """``count`` toggles that arrived before the handler was installed (``EarlySignals``)."""
        self._received.extend([signal.SIGUSR1] * count)

    def install(self, signum: int = signal.SIGUSR1) -> None:
        """Register the handler (main thread only, as Python requires)."""
        self._previous = signal.signal(signum, self.handler)

    def uninstall(self, signum: int = signal.SIGUSR1) -> None:
        signal.signal(signum, self._previous if self._previous is not None else signal.SIG_DFL)

    @property
    def pending(self) -> bool:
        """SIGUSR1s received and not yet drained."""
        return bool(self._received)

    def drain(self, *, apply: bool = True) -> list[PrivacyModeEvent]:
        """Apply every toggle received since the last call, in order; ``apply=False``
        (``policy.privacy_mode.sigusr1: false``) forgets them instead. Either way the handler
        stays: without it SIGUSR1 would end the process."""
        count = len(self._received)
        del self._received[:count]
        self.ignored += 0 if apply else count
        events = [self.mode.toggle("signal") for _ in range(count if apply else 0)]
        return [e for e in events if e is not None]
