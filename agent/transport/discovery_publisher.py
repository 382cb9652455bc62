"""Home Assistant's discovery on the broker: announced at each connect, on a reload and after a
Home Assistant restart, and what is no longer announced cleared.

The messages themselves come from :mod:`agent.transport.discovery`, the record of what the last
run announced from :mod:`agent.transport.announced`; this module decides when they go out and
keeps the broker, the record and the spec in step.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.transport.announced import load_record, save_announced
from agent.transport.discovery import (
    DiscoverySpec,
    announcements,
    platforms,
    retired_components,
    retractions,
)
from agent.transport.settings import MqttConfig

if TYPE_CHECKING:
    from agent.mqtt_client import paho

ANNOUNCE_MIN_SECONDS = 30.0
"""Home Assistant births closer together than this make one discovery re-send, not one each."""


def configured_spec(
    discovery: DiscoverySpec | None, settings: MqttConfig, key_id: object
) -> DiscoverySpec | None:
    """The service's spec with what the ``mqtt`` settings decide (the discovery mode, whether
    commands are offered) and the device key's ``kid`` (a string) as its serial number."""
    spec = (
        dataclasses.replace(discovery, mode=settings.discovery.mode, commands=settings.commands.enabled)
        if discovery is not None
        else None
    )
    if spec is not None and isinstance(key_id, str):
        spec = dataclasses.replace(spec, key_id=key_id)
    return spec


class DiscoveryPublisher:
    """The configured :class:`DiscoverySpec` and what the broker holds of it.

    ``publish`` sends one of the link's own retained messages (``OwnMessages.publish``)."""

    def __init__(
        self,
        spec: DiscoverySpec | None,
        state_dir: Path,
        publish: Callable[[paho.Client, str, bytes], object],
    ) -> None:
        self._spec = spec
        self._discovery = spec if spec is not None and spec.mode != "off" else None
        self._state_dir = state_dir
        self._publish = publish
        self._lock = threading.Lock()
        """Serialises discovery (connects, Home Assistant's births, reloads). paho's thread takes
        it only in ``on_connect``, holding no lock that ``publish`` needs: no deadlock."""
        self._announced: list[str] | None = None
        """The discovery topics on the broker as far as this run knows (read at the first connect)."""
        self._components: dict[str, str] = {}
        """The device message's components on the broker, live and retired (id to platform)."""
        self._rules: list[str] = []
        """The alert rules the record in state_dir names."""
        self._link_announced = False
        """Discovery went out on the current connection: a reload's change is published at once."""

    @property
    def spec(self) -> DiscoverySpec | None:
        """The configured spec, in mode ``off`` too: its alert rules still name retained states."""
        return self._spec

    @property
    def discovery(self) -> DiscoverySpec | None:
        """What is announced to Home Assistant (None when ``mqtt.discovery.mode`` is off)."""
        return self._discovery

    def alert_rules_at_start(self) -> list[str]:
        """The rules whose retained ``alert/<rule>`` the first connect of a run clears: this
        run's, and those the last run announced (one removed while the agent was stopped would
        keep its last state retained for ever; found by review)."""
        rules = set(self._spec.alert_rules) if self._spec is not None else set()
        record = load_record(self._state_dir) if self._spec is not None else None
        rules |= set(record.rules) if record is not None else set()
        return sorted(rules)

    def link_lost(self) -> None:
        """The connection is gone: a reload's change waits for the next connect's announcement."""
        self._link_announced = False

    def announce(self, client: paho.Client, *, first: bool) -> None:
        """Discovery of the configured mode; at the first connect of a run, first clear what the
        last run announced and this one does not (another mode, a removed alert rule)."""
        with self._lock:
            spec = self._spec
            if spec is None:
                return
            if first:
                record = load_record(self._state_dir)
                self._announced = record.topics if record is not None else None
                self._components = record.components if record is not None else {}
                self._rules = record.rules if record is not None else []
            self._send(client, spec)
            self._link_announced = True

    def update(
        self, spec: DiscoverySpec, client: Callable[[], paho.Client | None]
    ) -> tuple[DiscoverySpec, DiscoverySpec] | None:
        """A reload's spec: the window (``expire_after``) and the rules are taken from it, the
        rest are ``mqtt`` settings applied at the next start. Published at once on a connection
        that was announced (``client()`` read under the lock), else at the next connect. The old
        and the new spec, or None when nothing changed (or nothing is configured)."""
        with self._lock:
            old = self._spec
            if old is None:
                return None
            new = dataclasses.replace(
                old, window_seconds=spec.window_seconds, alert_rules=tuple(spec.alert_rules)
            )
            if new == old:
                return None
            self._spec = new
            if self._discovery is not None:
                self._discovery = new
            current = client()
            if self._link_announced and current is not None:
                self._send(current, new)
        return old, new

    def _send(self, client: paho.Client, spec: DiscoverySpec) -> None:
        """Under ``_lock``: clear the announced topics the spec no longer uses and record the new
        list (before publishing, so a crash leaves the next run clearing more, not less), then
        publish the spec's messages. In ``device`` mode a component announced before and gone now
        stays in the message as ``{"p": <platform>}``, which is what removes it in Home Assistant
        (leaving it out does not); in another mode there is no device message left to carry one
        (it is cleared), so none is kept."""
        retired: dict[str, str] = {}
        components: dict[str, str] = {}
        if spec.mode == "device":
            retired = retired_components(spec, self._components)
            components = {**retired, **platforms(spec)}
        messages = announcements(spec, retired)
        if (
            self._announced is None
            or set(self._announced) != set(messages)
            or components != self._components
            or set(spec.alert_rules) != set(self._rules)
        ):
            for topic in retractions(spec, self._announced):
                self._publish(client, topic, b"")
            save_announced(self._state_dir, list(messages), components, list(spec.alert_rules))
            self._announced = list(messages)
            self._components = components
            self._rules = list(spec.alert_rules)
        for topic, payload in messages.items():
            self._publish(client, topic, payload)


class HomeAssistantBirths:
    """Home Assistant's ``online`` births, each a reason to send discovery again: one pending
    re-send at a time, at most one per ``ANNOUNCE_MIN_SECONDS``, so that a flood of births makes
    one discovery re-send and one timer thread. ``resend`` runs on the timer's thread."""

    def __init__(
        self, resend: Callable[[], None], stopping: threading.Event, jitter: Callable[[], float]
    ) -> None:
        self._resend = resend
        self._stopping = stopping
        self._jitter = jitter
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last_resend: float | None = None
        self.coalesced = 0
        """Births that found a re-send pending (or the output stopping) and made none of their own."""

    def birth(self, payload: bytes) -> None:
        """A message on Home Assistant's status topic (paho's thread)."""
        if payload.strip() != b"online":
            return
        with self._lock:
            if self._timer is not None or self._stopping.is_set():
                self.coalesced += 1
                return
            delay = max(0.0, min(5.0, self._jitter()))
            if self._last_resend is not None:
                delay = max(delay, self._last_resend + ANNOUNCE_MIN_SECONDS - time.monotonic())
            timer = threading.Timer(delay, self._fire)
            timer.daemon = True
            self._timer = timer
        timer.start()

    def cancel(self) -> None:
        """At stop: the pending re-send, if any, is not made, and no birth starts another
        (``stopping`` is set under this lock, whatever the caller set before)."""
        with self._lock:
            self._stopping.set()
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            self._last_resend = time.monotonic()
        self._resend()
