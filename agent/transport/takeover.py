"""Telling a session takeover from an unlucky network, so the agent backs off instead of flapping.

A second client that connects with our client id (a copied config, a stolen certificate on a
broker that does not bind ids to identities) makes the broker close our session. MQTT 5 says
so: DISCONNECT reason 142 "Session taken over". MQTT 3.1.1 brokers, and mosquitto 2.0.11 even
for MQTT 5 clients, just close the socket ("already connected, closing old connection"), so
``min_short`` (2) connections in a row that each lasted under ``short_seconds`` count as a
takeover too. Fighting back (paho reconnects within a second) makes both clients flap, Home Assistant
shows the device offline again and again and commands sent meanwhile are lost. On a takeover
the detector answers with a wait: ``backoff_seconds``, doubling up to ``10 ×``, reset once a
connection lasts ``stable_seconds``.

The detector is pure logic: the caller passes the reason code's value and a monotonic time.
:class:`TakeoverWatch` applies its answers to paho's reconnect delay. No paho import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 142


@dataclass(frozen=True, slots=True)
class Takeover:
    """What to log and audit, and how long to wait before the next connection attempt."""

    reason: str
    wait_seconds: int
    count: int


class TakeoverDetector:
    def __init__(
        self,
        backoff_seconds: int = 30,
        *,
        short_seconds: float = 10.0,
        min_short: int = 2,
        stable_seconds: float = 120.0,
    ) -> None:
        self.backoff_seconds = backoff_seconds
        self.short_seconds = short_seconds
        self.min_short = min_short
        self.stable_seconds = stable_seconds
        self.count = 0
        self._connected_at: float | None = None
        self._short = 0
        self._wait = 0

    @property
    def backing_off(self) -> bool:
        return self._wait > 0

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float, reason: int) -> Takeover | None:
        """A lost connection; a :class:`Takeover` when it looks like one, else None."""
        lasted = now - self._connected_at if self._connected_at is not None else None
        self._connected_at = None
        if lasted is not None and lasted >= self.stable_seconds:
            self._short, self._wait = 0, 0
        if reason == SESSION_TAKEN_OVER:
            why = "the broker says another client took the session over (MQTT 5 reason 142)"
        elif lasted is not None and lasted < self.short_seconds:
            self._short += 1
            if self._short < self.min_short:
                return None
            why = f"{self._short} connections in a row were lost within {self.short_seconds:g} s"
        else:
            self._short = 0
            return None
        self._short = 0
        self.count += 1
        self._wait = min(self._wait * 2, self.backoff_seconds * 10) if self._wait else self.backoff_seconds
        return Takeover(why, self._wait, self.count)


class ReconnectDelay(Protocol):
    """What the watch needs of paho's client."""

    def reconnect_delay_set(self, min_delay: int = 1, max_delay: int = 120) -> None: ...


class TakeoverWatch:
    """Applies the detector's answers to the client: another client with our id makes us wait
    (paho's next reconnect) instead of taking the session back, and once a connection lasted the
    configured backoff (``reconnect``: min and max seconds) returns. A takeover is logged and
    handed to ``on_takeover`` with its message and count."""

    def __init__(
        self,
        detector: TakeoverDetector,
        *,
        reconnect: tuple[int, int],
        client_id: str,
        on_takeover: Callable[[str, int], None],
    ) -> None:
        self._detector = detector
        self._reconnect = reconnect
        self._client_id = client_id
        self._on_takeover = on_takeover

    def connected(self) -> None:
        self._detector.connected(time.monotonic())

    def disconnected(self, client: ReconnectDelay, reason: int) -> None:
        """paho's ``on_disconnect`` (not during a stop), with the reason code's value."""
        was_backing_off = self._detector.backing_off
        takeover = self._detector.disconnected(time.monotonic(), reason)
        if takeover is None:
            if was_backing_off and not self._detector.backing_off:
                client.reconnect_delay_set(*self._reconnect)
            return
        client.reconnect_delay_set(takeover.wait_seconds, takeover.wait_seconds)
        message = (
            f"session takeover: {takeover.reason}; another client uses client id {self._client_id!r}; "
            f"waiting {takeover.wait_seconds} s before reconnecting (takeover {takeover.count})"
        )
        logger.error("MQTT %s", message)
        self._on_takeover(message, takeover.count)
