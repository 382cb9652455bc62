"""The link's state and the figures the health message reports: what the connection is doing,
the last error worth showing (with what to check), and the counts of connects, failures,
commands and takeovers.

paho's thread changes them and the service's thread reads them, so every change and
:meth:`LinkStatus.health` are under :attr:`LinkStatus.lock`. The output holds the same lock where
it changes the protocol and the client (the fallback to MQTT 3.1.1) and where it starts to stop,
so that the two do not cross.
"""

from __future__ import annotations

import threading

from paho.mqtt.enums import MQTTProtocolVersion

from agent.transport.link import LinkState, TransportHealth, explain, telling
from agent.transport.spool_types import SpoolStats


class LinkStatus:
    """What the connection is doing, for ``health`` and the output's decisions."""

    def __init__(self, protocol: MQTTProtocolVersion) -> None:
        self.lock = threading.Lock()
        self.protocol = protocol
        """The protocol of the current client; changed under ``lock`` only."""
        self.socket_log: str | None = None
        """A socket error paho reported only in its log (a refused client certificate, after the
        handshake): the detail of the next disconnect's error."""
        self._state = LinkState.STOPPED
        self._last_error: str | None = None
        self._counts = {"connects": 0, "failures": 0, "accepted": 0, "rejected": 0, "takeovers": 0}

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def count(self, name: str) -> int:
        """Add one to a health counter (paho's thread) under the lock ``health`` reads with."""
        with self.lock:
            self._counts[name] += 1
            return self._counts[name]

    def set(self, state: LinkState, error: str | None) -> None:
        with self.lock:
            self.set_held(state, error)

    def set_held(self, state: LinkState, error: str | None) -> None:
        """``set`` for a caller that holds ``lock`` (not reentrant)."""
        self._state = state
        self._last_error = error

    def closed(self, reason: object) -> str | None:
        """paho's ``on_disconnect``, not during a stop. The error to log: a lost connection's, or
        the attempt's that failed, with the ``socket_log`` noted since the last one."""
        detail, self.socket_log = self.socket_log, None
        with self.lock:
            error = self._last_error
            if self._state == LinkState.CONNECTED:
                self._state = LinkState.DISCONNECTED
                error = self._last_error = detail or f"connection lost: {reason}"
            elif self._state != LinkState.REFUSED:
                # Closed before any CONNACK: typically the broker refused our client certificate.
                previous = self._last_error if self._state == LinkState.FAILED else None
                self._counts["failures"] += 1
                self._state = LinkState.FAILED
                error = explain(detail or f"connection closed before the broker answered: {reason}")
                self._last_error = telling(previous, error)
        return error

    def set_takeovers(self, count: int) -> None:
        with self.lock:
            self._counts["takeovers"] = count

    def health(self, stats: SpoolStats) -> TransportHealth:
        """The link's figures with the spool's ``stats`` (read before: the spool has its own lock)."""
        with self.lock:
            return TransportHealth(
                state=self._state.value,
                protocol="5" if self.protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1",
                last_error=self._last_error,
                backlog=stats.backlog,
                spool_bytes=stats.bytes,
                oldest_unsent_ms=stats.oldest_ms,
                dropped=stats.dropped,
                connects=self._counts["connects"],
                failures=self._counts["failures"],
                commands_accepted=self._counts["accepted"],
                commands_rejected=self._counts["rejected"],
                takeovers=self._counts["takeovers"],
            )
