"""The fallback to MQTT 3.1.1 when ``mqtt.protocol`` is ``auto`` and the broker refuses MQTT 5.

paho fixes the protocol when its client is created, so falling back means a new client. It is
asked for on paho's network thread (the refused CONNECT) and done on the sender thread (its
``each_round``), because the old client's network thread has to end first and cannot end itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from paho.mqtt.enums import MQTTProtocolVersion

from agent.errors import ConfigError
from agent.mqtt_client import PahoClient
from agent.transport.link import LinkState
from agent.transport.link_status import LinkStatus

logger = logging.getLogger(__name__)

UNSUPPORTED_PROTOCOL = {1, 132}  # 3.1.1 CONNACK 0x01 and MQTT 5 reason 0x84

FALLBACK_END_S = 2.0
"""How long the fallback to MQTT 3.1.1 waits for the MQTT 5 client's network thread to end (and
paho's ``SHUT_GRACE_S`` more, ``PahoClient.end_within``) before it starts the new client anyway."""
BUILD_RETRY_S = 5.0
"""How often a 3.1.1 client that could not be built or started (a password, key or certificate file
changed since the start, paho's thread not starting) is tried again."""


class ProtocolFallback:
    """``client`` is the output's current client; ``start_311`` installs and connects the new
    one (called under ``status.lock``, with ``status.protocol`` already MQTT 3.1.1)."""

    def __init__(
        self,
        *,
        auto: bool,
        status: LinkStatus,
        stopping: threading.Event,
        client: Callable[[], PahoClient | None],
        start_311: Callable[[], None],
    ) -> None:
        self._auto = auto
        self._status = status
        self._stopping = stopping
        self._client = client
        self._start_311 = start_311
        self._due = threading.Event()
        self._build_at: float | None = None
        """When to try building the 3.1.1 client again; None when none is wanted."""
        self._build_error: str | None = None

    def refused(self, reason_value: int) -> bool:
        """A refused CONNECT (paho's thread): True when it asks for the fallback, which the
        sender thread's next round makes (wake it)."""
        if self._auto and reason_value in UNSUPPORTED_PROTOCOL:
            self._due.set()
            return True
        return False

    def run_if_due(self) -> None:
        """The sender thread's ``each_round``."""
        if self._due.is_set():
            self._fall_back_to_311()
        elif self._build_at is not None and time.monotonic() >= self._build_at:
            self._start()

    def _fall_back_to_311(self) -> None:
        """The broker speaks only MQTT 3.1.1: rebuild the client for it (paho fixes it at creation).

        The old client's network thread gets ``FALLBACK_END_S``: paho's ``loop_stop`` waited for
        it without a bound, and a thread that did not end (in a connect, a TLS handshake, a
        blocked log write) held the sender thread and the fallback with it (found by review).
        A thread left running reports nothing: its callbacks that touch the link are removed.

        Once the output is stopping no client is started: the fallback, on the sender thread, can
        outlast ``stop``, and then started a client that connected and published ``online`` and
        discovery after the output had stopped (found by review)."""
        self._due.clear()
        old = self._client()
        if old is None or self._status.protocol == MQTTProtocolVersion.MQTTv311 or self._stopping.is_set():
            return
        logger.warning("the broker refused MQTT 5; falling back to MQTT 3.1.1")
        old.on_disconnect = None
        old.on_connect = None
        old.on_connect_fail = None
        old.on_log = None
        if not old.end_within(FALLBACK_END_S):
            logger.warning(
                "MQTT: the MQTT 5 client's network thread has not ended; it ends with the process"
            )
        self._start()

    def _start(self) -> None:
        """Install and connect the 3.1.1 client. It reads the password, key and certificate
        files again, which may have changed since the start: one that cannot be read now (or
        any other failure to start the client) is named in the link's health and tried again
        every ``BUILD_RETRY_S``. Raised, it was logged once as a sender error "retried every
        0.5 s" and never retried: the output stayed without a client until a restart (found by
        review)."""
        with self._status.lock:  # as ``stop`` sets ``stopping``: it ends this client, or there is none
            if self._stopping.is_set():
                self._build_at = None
                logger.info("MQTT: the output is stopping; no MQTT 3.1.1 client is started")
                return
            self._status.protocol = MQTTProtocolVersion.MQTTv311
            try:
                self._start_311()
            except Exception as exc:  # a file (ConfigError), or paho's thread not starting: tried again
                error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                self._status.set_held(LinkState.FAILED, error)  # before a stop's STOPPED, never after
            else:
                self._status.set_held(LinkState.CONNECTING, None)  # a failure built again is no longer
                self._build_at = self._build_error = None
                return
        self._build_at = time.monotonic() + BUILD_RETRY_S
        if error != self._build_error:
            logger.error(
                "MQTT: the MQTT 3.1.1 client cannot be built: %s; trying again every %.0f s",
                error, BUILD_RETRY_S,
            )
        self._build_error = error
