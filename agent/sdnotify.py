"""systemd's notify protocol (sd_notify(3)): READY, WATCHDOG, STATUS, STOPPING, EXTEND_TIMEOUT_USEC.

A datagram to ``$NOTIFY_SOCKET``; silent no-op when not run by systemd. The environment is read
when a notifier is built, not at import.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

EXTEND_STEP_S = 10.0
"""While a long start step runs, EXTEND_TIMEOUT_USEC this often, each for twice as long."""
EXTEND_MAX_S = 1800.0
"""At most this long in all: a step that hangs still ends in systemd's start timeout."""
REST_OF_START_S = 120
"""After the step, the rest of the start gets the unit's ``TimeoutStartSec=`` again (a test
keeps them equal)."""


class Notifier:
    """Sends state lines to systemd; ``enabled`` is False outside a Type=notify unit."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace socket
            addr = "\0" + addr[1:]
        self._address = addr
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:  # systemd gone or socket full: never fatal for the agent
            logger.warning("sd_notify failed: %s", exc)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @contextmanager
    def extending_start(self, status: str) -> Iterator[None]:
        """Ask systemd for more start time while the block runs, a step whose length grows with
        the device's history (the audit log's verification), so ``TimeoutStartSec=`` keeps
        bounding the rest of the start rather than the age of the log."""
        if not self.enabled:
            yield
            return
        done = threading.Event()
        step, deadline = EXTEND_STEP_S, time.monotonic() + EXTEND_MAX_S

        def keep_asking() -> None:
            while (left := deadline - time.monotonic()) > 0:
                self.notify(f"EXTEND_TIMEOUT_USEC={int(min(2 * step, left) * 1_000_000)}", f"STATUS={status}")
                if done.wait(step):
                    return

        thread = threading.Thread(target=keep_asking, name="sd-notify-extend", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.notify(f"EXTEND_TIMEOUT_USEC={REST_OF_START_S * 1_000_000}", "STATUS=starting")


def watchdog_interval(default: float | None = None) -> float | None:
    """Half of systemd's WATCHDOG_USEC in seconds, as sd_watchdog_enabled(3) advises."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return default
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return default
    return int(usec) / 2_000_000
