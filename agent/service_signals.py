"""The signals a running agent answers: SIGTERM/SIGINT stop it after flushing, SIGHUP reloads the
config, SIGUSR1 toggles privacy mode (agent.privacy.privacy_mode.SignalToggle).

A handler only sets a flag that the service loop reads on its next turn: it never takes a lock
the loop may hold, and never does I/O."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from agent.privacy.privacy_mode import SignalToggle


class ServiceSignals:
    def __init__(self, toggle: SignalToggle) -> None:
        self.toggle = toggle
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.stop_reason = "stopped"
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """From the main thread only (Python's rule); a service run in a thread is stopped by
        setting ``stop`` instead."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._old = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_hup),
        }
        self.toggle.install()

    def restore(self) -> None:
        if not self._old:
            return
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        self._old = {}
        self.toggle.uninstall()

    def take_reload(self) -> bool:
        """True once per SIGHUP received since the last call."""
        if not self.reload.is_set():
            return False
        self.reload.clear()
        return True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = signal.Signals(signum).name.lower()
        self.stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()
