"""The MQTT output: spool first, publish QoS 1, delete on PUBACK; availability, discovery, commands.

Threads: paho's network thread (``loop_start``) runs the callbacks; the sender thread
(:mod:`agent.transport.sender`) moves spooled messages to paho, at most ``max_inflight`` at a
time, in spool order, and deletes each after its PUBACK.

Delivery is at least once. A spooled message is handed to paho once per connection: at each
connect the last connection's unacknowledged messages are taken back from paho (it would re-send
them only after ``on_connect``, behind newer rows) and the sender sends again from the oldest
unacknowledged row, so the broker gets them in spool order; the link's own messages among them
(status, the first connect's clears, discovery) are published again first. After a crash or
``kill -9`` the unacknowledged rows are sent again too, so a receiver may see a message twice
and drops it by ``(kid, boot, seq)`` as the verifier does.

The parts wired here: ``link_status`` (state, health figures), ``own_messages`` (status and clears
until their PUBACK), ``discovery_publisher``, ``subscriptions`` (commands, Home Assistant's births,
cosignatures), ``takeover``, ``protocol_fallback`` (to MQTT 3.1.1) and ``client_setup``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import Clock
from agent.crypto.keys import public_from_jwk
from agent.mqtt_client import PahoClient, paho
from agent.transport.client_setup import connect_async, new_client
from agent.transport.commands import Command
from agent.transport.discovery import DiscoverySpec, discovery_spec
from agent.transport.discovery_publisher import DiscoveryPublisher, HomeAssistantBirths, configured_spec
from agent.transport.link import LinkState, OutgoingMessage, TransportHealth, explain
from agent.transport.link_status import LinkStatus
from agent.transport.own_messages import OwnMessages
from agent.transport.protocol_fallback import ProtocolFallback
from agent.transport.rowcheck import RowCheck
from agent.transport.sender import SpoolSender
from agent.transport.settings import MqttConfig, MqttSite
from agent.transport.spool import Spool
from agent.transport.spool_types import DropReport
from agent.transport.subscriptions import Subscriptions
from agent.transport.takeover import TakeoverDetector, TakeoverWatch

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)

CLEARED_AT_START = ("privacy_mode",)
"""Retained state topics the service owns, removed at the first connect of each run (with
``alert/<rule>`` for every rule the discovery spec names; a rule a reload removes loses its
``alert/<rule>`` then, see ``update_discovery``)."""


class MqttOutput:
    """The service's publisher. ``publish`` is durable as soon as it returns.

    ``on_command`` gets validated commands on paho's thread (queue them, act in the loop);
    ``on_drop`` gets every :class:`DropReport` (route it to the audit log); ``on_event`` gets
    ``(code, message)`` for events the audit log records (``session_takeover``); ``public_key`` (the
    device's JWK) gives its ``kid`` to the discovery message as the device's serial number. The
    key itself is the service's signed ``key`` message: the transport publishes nothing unsigned
    under the base topic except ``status``. ``previous_keys`` are the device's earlier keys that a
    recorded rotation links to it: spooled rows they signed (the rotation notice) may still leave.
    """

    def __init__(
        self,
        settings: MqttConfig,
        *,
        device_id: str,
        state_dir: Path,
        spool_days: int,
        clock: Clock,
        on_command: Callable[[Command], None] | None = None,
        on_drop: Callable[[DropReport], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
        on_cosignature: Callable[[bytes], object] | None = None,
        discovery: DiscoverySpec | None = None,
        public_key: Mapping[str, Any] | None = None,
        previous_keys: Sequence[Ed25519PublicKey] = (),
        jitter: Callable[[], float] = lambda: random.uniform(0.0, 5.0),  # noqa: S311 - not crypto
    ) -> None:
        self.settings = settings
        self.base_topic = settings.base_topic or f"emotion-agent/{device_id}"
        self.status_topic = f"{self.base_topic}/status"
        self.cosignature_topic = f"{self.base_topic}/audit/cosignature"
        self.client_id = settings.client_id or f"emotion-agent-{device_id}"
        self._spool = Spool(
            state_dir / "spool.sqlite3",
            clock,
            max_bytes=settings.spool_max_mb * 1024 * 1024,
            max_age_seconds=spool_days * 86400,
            on_drop=on_drop,
        )
        # The link's own messages (not spooled) until their PUBACK, for a reconnect to publish again.
        self._own = OwnMessages()
        kid = public_key.get("kid") if public_key is not None else None
        self._announcer = DiscoveryPublisher(
            configured_spec(discovery, settings, kid), state_dir, self._own.publish
        )
        self._last_row = 0
        self._status = LinkStatus(
            MQTTProtocolVersion.MQTTv311 if settings.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        )
        self._stopping = threading.Event()
        self._births = HomeAssistantBirths(self._reannounce, self._stopping, jitter)
        discovery_on = self._announcer.discovery
        self._subscriptions = Subscriptions(
            self.base_topic,
            device_id=device_id,
            commands=settings.commands,
            count=self._status.count,
            on_command=on_command,
            cosignature_topic=self.cosignature_topic,
            on_cosignature=on_cosignature,
            ha_status_topic=discovery_on.status_topic if discovery_on is not None else None,
            on_ha_status=self._births.birth,
        )
        self._on_event = on_event
        self._takeover = TakeoverWatch(
            TakeoverDetector(settings.takeover_backoff_seconds),
            reconnect=(settings.reconnect_min_seconds, settings.reconnect_max_seconds),
            client_id=self.client_id,
            on_takeover=self._on_takeover,
        )
        self._connected = threading.Event()
        self._client: PahoClient | None = None
        self._fallback = ProtocolFallback(
            auto=settings.protocol == "auto",
            status=self._status,
            stopping=self._stopping,
            client=lambda: self._client,
            start_311=self._start_311_client,
        )
        own_key = public_from_jwk(dict(public_key), "public_key") if public_key is not None else None
        rows = RowCheck(self.base_topic, device_id, own_key, previous_keys)
        self._sender = SpoolSender(
            self._spool, settings.max_inflight, self._connected, lambda: self._client,
            each_round=self._fallback.run_if_due, check=rows.check,
        )

    @classmethod
    def from_config(
        cls,
        cfg: MqttSite,
        clock: Clock,
        *,
        on_command: Callable[[Command], None] | None = None,
        on_drop: Callable[[DropReport], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
        on_cosignature: Callable[[bytes], object] | None = None,
        public_key: Mapping[str, Any] | None = None,
        previous_keys: Sequence[Ed25519PublicKey] = (),
    ) -> MqttOutput:
        """Wire from the whole agent config: topics, spool retention, discovery of alert rules."""
        return cls(
            cfg.mqtt,
            device_id=cfg.device_id,
            state_dir=cfg.state_dir,
            spool_days=cfg.retention.spool_days,
            clock=clock,
            on_command=on_command,
            on_drop=on_drop,
            on_event=on_event,
            on_cosignature=on_cosignature,
            discovery=discovery_spec(cfg),
            public_key=public_key,
            previous_keys=previous_keys,
        )

    # --- the service's side ---------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> None:
        """Spool one message: the ``Output`` interface and the only way in. ``message.topic`` is
        the full topic; a wildcard or an empty level is refused here, a topic outside the base
        by the spool (quarantined, counted)."""
        topic = message.topic
        if not topic or "" in topic.split("/") or any(c in topic for c in "+#\0"):
            raise ValueError(
                f"topic {topic!r} must be a plain relative topic under the base: no wildcard, "
                "no empty level"
            )
        self._last_row = self._spool.put(topic, message.payload, retain=message.retain)
        self._sender.wake()

    def update_retention(self, spool_days: int) -> None:
        """A reload changed ``retention.spool_days``: unsent messages are aged by it from the
        next limits check on (the next message, or the sender's retention timer)."""
        self._spool.set_max_age(spool_days * 86400)

    def update_discovery(self, spec: DiscoverySpec) -> None:
        """A reload changed the alert rules or the window length: ``spec`` is the new config's
        (:func:`~agent.transport.discovery.discovery_spec`). Connected, Home Assistant gets it
        at once, after the topics it no longer uses are cleared (a removed rule's entity in
        ``entities`` mode), and the list kept in ``state_dir`` follows; otherwise the next
        connect announces it. Only what a reload applies is taken from ``spec``: the window
        (``expire_after``) and the rules; the topics, prefix, ``expire_after_windows`` and mode
        are ``mqtt`` settings, applied at the next start. A removed rule's retained
        ``alert/<rule>`` is emptied once the rows spooled so far (its last state among them)
        have gone to paho, so that state cannot land after it and stay retained."""
        change = self._announcer.update(spec, lambda: self._client)
        if change is None:
            return
        old, new = change
        removed = [rule for rule in old.alert_rules if rule not in new.alert_rules]
        if removed:
            self._sender.clear_after(self._last_row, [f"{self.base_topic}/alert/{rule}" for rule in removed])
        logger.info(
            "MQTT discovery follows the reload",
            extra={"fields": {"rules": len(new.alert_rules), "window_seconds": new.window_seconds}},
        )

    def health(self) -> TransportHealth:
        return self._status.health(self._spool.stats())

    @property
    def discovery(self) -> DiscoverySpec | None:
        """What is announced to Home Assistant (None when ``mqtt.discovery.mode`` is off)."""
        return self._announcer.discovery

    @property
    def state(self) -> LinkState:
        return self._status.state

    @property
    def births_coalesced(self) -> int:
        """Home Assistant births that made no discovery re-send of their own (one was pending)."""
        return self._births.coalesced

    def start(self) -> None:
        """Connect in the background (a broker that is down at boot is retried) and start sending."""
        self._stopping.clear()
        self._client = self._build_client()
        self._status.set(LinkState.CONNECTING, None)
        connect_async(self._client, self.settings, self._status.protocol)
        self._sender.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends within ``timeout`` s whatever the broker does (paho's thread may take
        ``SHUT_GRACE_S`` more): sends what is spooled (only while connected or still connecting,
        for half the time at most), publishes ``offline`` ourselves and waits for it, then
        disconnects cleanly (so the broker sends no LWT). Whatever is not acknowledged stays in
        the spool for the next start. Each wait used to take its own ``timeout`` and paho's
        ``loop_stop`` as long as a hung broker made it, past systemd's stop timeout (found by
        review). The spool is closed and the state set to stopped even when a step before
        raises (the error still reaches the caller): a spool left open kept its file open and
        could report a drop to an audit log the service had closed."""
        deadline = time.monotonic() + timeout
        try:
            try:
                self._drain(timeout / 2)
            finally:  # the sender thread ends even when the drain raised: not left on a closed spool
                with self._status.lock:  # a 3.1.1 fallback client is installed before (ended below) or never
                    self._stopping.set()
                self._births.cancel()
                self._sender.stop(_left(deadline))
            client = self._client
            if client is not None:
                if self._connected.is_set():
                    self._own.say_offline(client, self.status_topic, deadline)
                if not client.end_within(_left(deadline)):
                    logger.warning(
                        "MQTT: paho's network thread is still in a connect to a broker that does not "
                        "answer; it ends with the process"
                    )
                self._sender.apply_late_acks()  # PUBACKs that came while `offline` was awaited
        finally:
            self._connected.clear()
            self._status.set(LinkState.STOPPED, self._status.last_error)
            self._spool.close()

    def _drain(self, timeout: float) -> None:
        """Real time, not the injected clock: this waits for the network."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._sender.running:
            state = self._status.state
            if state == LinkState.CONNECTED:
                if self._spool.stats().backlog == 0 and not self._sender.clearing:
                    return
            elif state != LinkState.CONNECTING:
                return  # refused, failed or lost: the backlog waits in the spool
            time.sleep(0.05)

    def _build_client(self) -> PahoClient:
        client = new_client(
            self.settings,
            client_id=self.client_id,
            status_topic=self.status_topic,
            protocol=self._status.protocol,
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._subscriptions.deliver
        client.on_log = self._on_log
        return client

    def _start_311_client(self) -> None:
        """The fallback's new client (the sender thread, under the status lock)."""
        self._sender.forget_inflight()
        self._client = self._build_client()
        connect_async(self._client, self.settings, self._status.protocol)

    # --- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self._status.count("failures")
            error = explain(f"broker refused the connection: {reason}")
            self._status.set(LinkState.REFUSED, error)
            logger.warning("MQTT %s; retrying", error, extra={"fields": {"host": self.settings.host}})
            if self._fallback.refused(reason.value):
                self._sender.wake()
            return
        first = self._status.count("connects") == 1
        self._own.take_back(client, self._sender.reconnected)
        self._takeover.connected()
        if first:
            # A state retained by a previous run is not this run's state. The service's fresh
            # state (already spooled, or later) goes out after this, in order. Before `online`,
            # so a dashboard never shows the old state as available, even for a moment.
            rules = self._announcer.alert_rules_at_start()
            for suffix in (*CLEARED_AT_START, *(f"alert/{rule}" for rule in rules)):
                self._own.publish(client, f"{self.base_topic}/{suffix}", b"")
        self._own.publish(client, self.status_topic, b"online")
        self._announcer.announce(client, first=first)
        subs = self._subscriptions.topics()
        if subs:
            client.subscribe(subs)
        # The flag before the state: `stop` waits for `offline` only while the flag is set, and a
        # caller that saw CONNECTED must not find it unset (the queued discovery would be cut).
        self._connected.set()
        self._status.set(LinkState.CONNECTED, None)  # after availability and discovery are queued
        self._sender.wake()
        logger.info("MQTT connected", extra={"fields": {"host": self.settings.host}})

    def _socket_error(self) -> str:
        client = self._client
        exc = client.last_socket_error if client is not None else None
        return f"{exc.__class__.__name__}: {exc}" if exc is not None else "connection failed"

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        self._status.count("failures")
        where = f"{self.settings.host}:{self.settings.port}"
        error = explain(f"cannot connect to {where}: {self._socket_error()}")
        self._status.set(LinkState.FAILED, error)
        logger.warning("MQTT %s; retrying", error, extra={"fields": {"host": self.settings.host}})

    def _on_disconnect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._connected.clear()
        self._announcer.link_lost()
        if self._stopping.is_set():
            return
        self._takeover.disconnected(client, int(reason.value))
        error = self._status.closed(reason)
        logger.warning("MQTT disconnected: %s; reconnecting", error)

    def _on_takeover(self, message: str, count: int) -> None:
        """Another client with our id (``TakeoverWatch``): counted, and recorded in the audit log."""
        self._status.set_takeovers(count)
        if self._on_event is not None:
            try:
                self._on_event("session_takeover", message)
            except Exception:
                logger.exception("the event handler failed for a session takeover")

    def _on_log(self, _c: paho.Client, _u: Any, level: int, message: str) -> None:
        """paho reports socket errors after the handshake (a refused client certificate) only here."""
        if level == paho.MQTT_LOG_ERR and message.startswith("failed to") and not self._stopping.is_set():
            self._status.socket_log = message

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        self._own.acked(mid)
        self._sender.acked(mid, reason)

    def _reannounce(self) -> None:
        """Home Assistant's birth asked for discovery again (the timer's thread)."""
        client = self._client
        if client is None or self._announcer.discovery is None or not self._connected.is_set():
            return
        logger.info("Home Assistant restarted: re-sending discovery")
        self._announcer.announce(client, first=False)
        self._own.publish(client, self.status_topic, b"online")


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic``), never below zero."""
    return max(0.0, deadline - time.monotonic())
