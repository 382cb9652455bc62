"""The signals a running agent answers: SIGTERM/SIGINT stop it after flushing, SIGHUP reloads the
config, SIGUSR1 toggles privacy mode (agent.privacy.privacy_mode.SignalToggle).

A handler only appends to a list that the service loop reads on its next turn (one bytecode): it
never takes a lock, and never does I/O. Python runs a handler on the main thread between two
bytecodes of whatever runs there, the loop or another handler; SIGTERM and SIGHUP used to set a
``threading.Event``, whose lock the interrupted ``Event.clear`` (a reload being taken) or the
first SIGTERM's ``Event.set`` held, and the agent hung for good, deaf to SIGTERM (found by
review)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from agent.privacy.privacy_mode import SignalToggle


class EarlySignals:
    """SIGUSR1 and SIGHUP while ``run`` starts (the audit log's check, the models, minutes with a
    long log), before the service's own handlers are in place: held, not fatal. Their default
    action ends the process, so a privacy toggle sent then killed the agent, and systemd's restart
    brought the camera up without it (found by review). ``ServiceSignals.install`` applies what
    was held. SIGTERM keeps its default: a stop during the start needs no flush."""

    def __init__(self) -> None:
        self.toggles: list[int] = []
        self.reloads: list[int] = []
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._old = {
            signal.SIGUSR1: signal.signal(signal.SIGUSR1, self._on_toggle),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_reload),
        }

    def restore(self) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        self._old = {}

    def _on_toggle(self, signum: int, frame: FrameType | None) -> None:
        self.toggles.append(signum)  # one bytecode, as in SignalToggle

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reloads.append(signum)


class ServiceSignals:
    def __init__(self, toggle: SignalToggle) -> None:
        self.toggle = toggle
        self.stop = threading.Event()
        """Set by a caller that runs the service in a thread (never by a handler)."""
        self._stops: list[int] = []
        self._reloads: list[int] = []
        self.stop_reason = "stopped"
        self._old: dict[int, Any] = {}
        self.early: EarlySignals | None = None
        """Signals held while the service was built (``EarlySignals``), applied at ``install``."""

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
        early = self.early  # read after the handlers changed: none of its signals is missed
        if early is not None:
            self.toggle.received(len(early.toggles))
            if early.reloads:
                self.request_reload()

    def restore(self) -> None:
        if not self._old:
            return
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        self._old = {}
        self.toggle.uninstall()

    @property
    def stop_requested(self) -> bool:
        """SIGTERM or SIGINT came, or ``stop`` was set."""
        return bool(self._stops) or self.stop.is_set()

    def request_reload(self) -> None:
        """What SIGHUP does: the loop reloads at its next turn."""
        self._reloads.append(signal.SIGHUP)  # one bytecode, as in the handler

    @property
    def reload_pending(self) -> bool:
        """A reload asked for and not yet taken."""
        return bool(self._reloads)

    def take_reload(self) -> bool:
        """True if a reload was asked for since the last call (several count as one); one that
        comes while this runs is kept for the next call."""
        count = len(self._reloads)
        if not count:
            return False
        del self._reloads[:count]
        return True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = "sigint" if signum == signal.SIGINT else "sigterm"
        self._stops.append(signum)  # one bytecode: no lock (module docstring)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reloads.append(signum)
