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
"""

from __future__ import annotations

import dataclasses
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import Clock
from agent.crypto.keys import load_public_key, public_from_jwk
from agent.errors import ConfigError
from agent.transport.announced import load_record, save_announced
from agent.transport.commands import Command, CommandParser
from agent.transport.discovery import (
    DiscoverySpec,
    announcements,
    discovery_spec,
    platforms,
    retired_components,
    retractions,
)
from agent.transport.link import (
    LinkState,
    OutgoingMessage,
    PahoClient,
    TransportHealth,
    explain,
    read_password,
    telling,
    tls_context,
)
from agent.transport.paho_client import paho
from agent.transport.rowcheck import RowCheck
from agent.transport.sender import SpoolSender
from agent.transport.settings import MqttConfig, MqttSite
from agent.transport.spool import DropReport, Spool
from agent.transport.takeover import TakeoverDetector

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)

MAX_INCOMING_BYTES = 4096
"""MQTT 5 Maximum Packet Size we announce: the broker never forwards us anything larger."""

CLEARED_AT_START = ("privacy_mode",)
"""Retained state topics the service owns, removed at the first connect of each run (with
``alert/<rule>`` for every rule the discovery spec names; a rule a reload removes loses its
``alert/<rule>`` then, see ``update_discovery``)."""

_UNSUPPORTED_PROTOCOL = {1, 132}  # 3.1.1 CONNACK 0x01 and MQTT 5 reason 0x84

FALLBACK_END_S = 2.0
"""How long the fallback to MQTT 3.1.1 waits for the MQTT 5 client's network thread to end (and
paho's ``SHUT_GRACE_S`` more, ``PahoClient.end_within``) before it starts the new client anyway."""

ANNOUNCE_MIN_SECONDS = 30.0
"""Home Assistant births closer together than this make one discovery re-send, not one each."""


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
        self._on_cosignature = on_cosignature
        self.client_id = settings.client_id or f"emotion-agent-{device_id}"
        self._spool = Spool(
            state_dir / "spool.sqlite3",
            clock,
            max_bytes=settings.spool_max_mb * 1024 * 1024,
            max_age_seconds=spool_days * 86400,
            on_drop=on_drop,
        )
        self._on_command = on_command
        self._state_dir = state_dir
        self._spec = (
            dataclasses.replace(discovery, mode=settings.discovery.mode, commands=settings.commands.enabled)
            if discovery is not None
            else None
        )
        kid = public_key.get("kid") if public_key is not None else None
        if self._spec is not None and isinstance(kid, str):
            self._spec = dataclasses.replace(self._spec, key_id=kid)
        self._discovery = self._spec if self._spec is not None and self._spec.mode != "off" else None
        self._announce_lock = threading.Lock()
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
        self._last_row = 0
        self._jitter = jitter
        operator = settings.commands.operator_key
        self._commands = CommandParser(
            self.base_topic,
            device_id=device_id,
            operator_key=load_public_key(operator) if operator is not None else None,
        )
        self._on_event = on_event
        self._takeover = TakeoverDetector(settings.takeover_backoff_seconds)
        self._announce_timer: threading.Timer | None = None
        self._last_announce: float | None = None
        self.births_coalesced = 0
        self._lock = threading.Lock()
        self._state = LinkState.STOPPED
        self._last_error: str | None = None
        self._socket_log: str | None = None
        self._counts = {"connects": 0, "failures": 0, "accepted": 0, "rejected": 0, "takeovers": 0}
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._downgrade = threading.Event()
        self._protocol = MQTTProtocolVersion.MQTTv311 if settings.protocol == "3.1.1" else (
            MQTTProtocolVersion.MQTTv5
        )
        self._client: PahoClient | None = None
        # The link's own messages (not spooled) until their PUBACK, for a reconnect to publish again.
        self._publishing = threading.Lock()  # a publish and its entry, or a connect taking back
        self._own_lock = threading.Lock()  # the map only; never held while calling paho
        self._own: dict[int, paho.MQTTMessageInfo] = {}
        own_key = public_from_jwk(dict(public_key), "public_key") if public_key is not None else None
        rows = RowCheck(self.base_topic, device_id, own_key, previous_keys)
        self._sender = SpoolSender(
            self._spool, settings.max_inflight, self._connected, lambda: self._client,
            each_round=self._maybe_fall_back, check=rows.check,
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
        with self._announce_lock:
            old = self._spec
            if old is None:
                return
            new = dataclasses.replace(
                old, window_seconds=spec.window_seconds, alert_rules=tuple(spec.alert_rules)
            )
            if new == old:
                return
            self._spec = new
            if self._discovery is not None:
                self._discovery = new
            client = self._client
            if self._link_announced and client is not None:
                self._send_discovery(client, new)
        removed = [rule for rule in old.alert_rules if rule not in new.alert_rules]
        if removed:
            self._sender.clear_after(self._last_row, [f"{self.base_topic}/alert/{rule}" for rule in removed])
        logger.info(
            "MQTT discovery follows the reload",
            extra={"fields": {"rules": len(new.alert_rules), "window_seconds": new.window_seconds}},
        )

    def health(self) -> TransportHealth:
        stats = self._spool.stats()
        with self._lock:
            return TransportHealth(
                state=self._state.value,
                protocol="5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1",
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

    @property
    def discovery(self) -> DiscoverySpec | None:
        """What is announced to Home Assistant (None when ``mqtt.discovery.mode`` is off)."""
        return self._discovery

    @property
    def state(self) -> LinkState:
        return self._state

    def start(self) -> None:
        """Connect in the background (a broker that is down at boot is retried) and start sending."""
        self._stopping.clear()
        self._client = self._build_client()
        self._set_state(LinkState.CONNECTING, None)
        self._connect_async(self._client)
        self._sender.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends within ``timeout`` s whatever the broker does (paho's thread may take
        ``SHUT_GRACE_S`` more): sends what is spooled (only while connected or still connecting,
        for half the time at most), publishes ``offline`` ourselves and waits for it, then
        disconnects cleanly (so the broker sends no LWT). Whatever is not acknowledged stays in
        the spool for the next start. Each wait used to take its own ``timeout`` and paho's
        ``loop_stop`` as long as a hung broker made it, past systemd's stop timeout (found by
        review)."""
        deadline = time.monotonic() + timeout
        self._drain(timeout / 2)
        with self._lock:  # the fallback's 3.1.1 client is installed before (and ended below) or never
            self._stopping.set()
            timer, self._announce_timer = self._announce_timer, None
        if timer is not None:
            timer.cancel()
        self._sender.stop(_left(deadline))
        client = self._client
        if client is not None:
            if self._connected.is_set():
                self._say_offline(client, deadline)
            if not client.end_within(_left(deadline)):
                logger.warning(
                    "MQTT: paho's network thread is still in a connect to a broker that does not "
                    "answer; it ends with the process"
                )
            self._sender.apply_late_acks()  # PUBACKs that came while `offline` was awaited
        self._connected.clear()
        self._set_state(LinkState.STOPPED, self._last_error)
        self._spool.close()

    def _say_offline(self, client: PahoClient, deadline: float) -> None:
        """Publish ``offline`` and wait for its PUBACK until ``deadline``: acknowledged in order,
        it says that all queued before it reached the broker."""
        info = self._publish(client, self.status_topic, b"offline")
        try:
            info.wait_for_publish(_left(deadline))
        except (RuntimeError, ValueError) as exc:
            logger.warning("could not confirm the offline status: %s", exc)
        else:
            if not info.is_published():
                logger.warning(
                    "the broker did not acknowledge the offline status in time; messages queued "
                    "before it may not have reached it"
                )

    def _drain(self, timeout: float) -> None:
        """Real time, not the injected clock: this waits for the network."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._sender.running:
            state = self._state
            if state == LinkState.CONNECTED:
                if self._spool.stats().backlog == 0 and not self._sender.clearing:
                    return
            elif state != LinkState.CONNECTING:
                return  # refused, failed or lost: the backlog waits in the spool
            time.sleep(0.05)

    # --- building the client --------------------------------------------------------------

    def _build_client(self) -> PahoClient:
        s = self.settings
        client = PahoClient(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self._protocol)
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(s.reconnect_min_seconds, s.reconnect_max_seconds)
        client.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            password = read_password(s.password_file) if s.password_file is not None else None
            client.username_pw_set(s.username, password)
        if s.tls is not None:
            try:
                client.tls_set_context(tls_context(s.tls.ca, s.tls.cert, s.tls.key))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    f"mqtt.tls: cannot load the CA {s.tls.ca}, certificate or key: {exc}"
                ) from exc
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _connect_async(self, client: PahoClient) -> None:
        """Queue the connection and start paho's thread; it retries with backoff until stopped."""
        props = None
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
            props.MaximumPacketSize = MAX_INCOMING_BYTES
        client.connect_async(
            self.settings.host,
            self.settings.port,
            self.settings.keepalive_seconds,
            clean_start=True,
            properties=props,
        )
        client.loop_start()

    # --- paho callbacks (network thread) --------------------------------------------------

    def _count(self, name: str) -> int:
        """Add one to a health counter (paho's thread) under the lock ``health`` reads with."""
        with self._lock:
            self._counts[name] += 1
            return self._counts[name]

    def _set_state(self, state: LinkState, error: str | None) -> None:
        with self._lock:
            self._state = state
            self._last_error = error

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self._count("failures")
            error = explain(f"broker refused the connection: {reason}")
            self._set_state(LinkState.REFUSED, error)
            logger.warning("MQTT %s; retrying", error, extra={"fields": {"host": self.settings.host}})
            if self.settings.protocol == "auto" and reason.value in _UNSUPPORTED_PROTOCOL:
                self._downgrade.set()
                self._sender.wake()
            return
        first = self._count("connects") == 1
        self._take_back(client)
        self._takeover.connected(time.monotonic())
        if first:
            # A state retained by a previous run is not this run's state. The service's fresh
            # state (already spooled, or later) goes out after this, in order. Before `online`,
            # so a dashboard never shows the old state as available, even for a moment.
            # With the rules the last run announced: one removed while the agent was stopped
            # would keep its last state retained for ever (found by review).
            rules = set(self._spec.alert_rules) if self._spec is not None else set()
            record = load_record(self._state_dir) if self._spec is not None else None
            rules |= set(record.rules) if record is not None else set()
            for suffix in (*CLEARED_AT_START, *(f"alert/{rule}" for rule in sorted(rules))):
                self._publish(client, f"{self.base_topic}/{suffix}", b"")
        self._publish(client, self.status_topic, b"online")
        subs = [(t, 1) for t in self._commands.topics] if self.settings.commands.enabled else []
        self._announce(client, first=first)
        if self._discovery is not None:
            subs.append((self._discovery.status_topic, 1))
        if self._on_cosignature is not None:
            subs.append((self.cosignature_topic, 1))  # a witness's cosigned checkpoints (docs/fleet.md)
        if subs:
            client.subscribe(subs)
        # The flag before the state: `stop` waits for `offline` only while the flag is set, and a
        # caller that saw CONNECTED must not find it unset (the queued discovery would be cut).
        self._connected.set()
        self._set_state(LinkState.CONNECTED, None)  # after availability and discovery are queued
        self._sender.wake()
        logger.info("MQTT connected", extra={"fields": {"host": self.settings.host}})

    def _publish(
        self, client: paho.Client, topic: str, payload: bytes, *, qos: int = 1, retain: bool = True
    ) -> paho.MQTTMessageInfo:
        """Publish one of the link's own messages (not spooled), remembered until its PUBACK."""
        with self._publishing:
            info = client.publish(topic, payload, qos=qos, retain=retain)
            with self._own_lock:
                self._own[info.mid] = info
        return info

    def _take_back(self, client: paho.Client) -> None:
        """At a connect, before anything else is published: take the last connection's
        unacknowledged messages back from paho (the sender sends its rows again, in spool order)
        and publish the link's own among them again, in their order. The first connect's clears
        and retractions are sent by no later connect: dropped, they would be lost."""
        with self._publishing:
            dropped = self._sender.reconnected(client)
            with self._own_lock:
                # The same message, not only the same id: ids are reused once acknowledged.
                own = [m for m in dropped if self._own.get(m.mid) is m.info]
                self._own.clear()  # nothing else of ours is still with paho
        for m in own:
            self._publish(client, m.topic, bytes(m.payload), qos=m.qos, retain=m.retain)

    def _announce(self, client: paho.Client, *, first: bool) -> None:
        """Discovery of the configured mode; at the first connect of a run, first clear what the
        last run announced and this one does not (another mode, a removed alert rule)."""
        with self._announce_lock:
            spec = self._spec
            if spec is None:
                return
            if first:
                record = load_record(self._state_dir)
                self._announced = record.topics if record is not None else None
                self._components = record.components if record is not None else {}
                self._rules = record.rules if record is not None else []
            self._send_discovery(client, spec)
            self._link_announced = True

    def _send_discovery(self, client: paho.Client, spec: DiscoverySpec) -> None:
        """Under ``_announce_lock``: clear the announced topics the spec no longer uses and record
        the new list (before publishing, so a crash leaves the next run clearing more, not less),
        then publish the spec's messages. In ``device`` mode a component announced before and
        gone now stays in the message as ``{"p": <platform>}``, which is what removes it in Home
        Assistant (leaving it out does not); in another mode there is no device message left to
        carry one (it is cleared), so none is kept."""
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

    def _socket_error(self) -> str:
        client = self._client
        exc = client.last_socket_error if client is not None else None
        return f"{exc.__class__.__name__}: {exc}" if exc is not None else "connection failed"

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        self._count("failures")
        where = f"{self.settings.host}:{self.settings.port}"
        error = explain(f"cannot connect to {where}: {self._socket_error()}")
        self._set_state(LinkState.FAILED, error)
        logger.warning("MQTT %s; retrying", error, extra={"fields": {"host": self.settings.host}})

    def _on_disconnect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._connected.clear()
        self._link_announced = False
        if self._stopping.is_set():
            return
        self._watch_takeover(client, reason)
        detail, self._socket_log = self._socket_log, None
        with self._lock:
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
        logger.warning("MQTT disconnected: %s; reconnecting", error)

    def _watch_takeover(self, client: paho.Client, reason: ReasonCode) -> None:
        """Another client with our id: wait (paho's next reconnect) instead of taking it back."""
        was_backing_off = self._takeover.backing_off
        takeover = self._takeover.disconnected(time.monotonic(), int(reason.value))
        s = self.settings
        if takeover is None:
            if was_backing_off and not self._takeover.backing_off:
                client.reconnect_delay_set(s.reconnect_min_seconds, s.reconnect_max_seconds)
            return
        client.reconnect_delay_set(takeover.wait_seconds, takeover.wait_seconds)
        message = (
            f"session takeover: {takeover.reason}; another client uses client id {self.client_id!r}; "
            f"waiting {takeover.wait_seconds} s before reconnecting (takeover {takeover.count})"
        )
        logger.error("MQTT %s", message)
        with self._lock:
            self._counts["takeovers"] = takeover.count
        if self._on_event is not None:
            try:
                self._on_event("session_takeover", message)
            except Exception:
                logger.exception("the event handler failed for a session takeover")

    def _on_log(self, _c: paho.Client, _u: Any, level: int, message: str) -> None:
        """paho reports socket errors after the handshake (a refused client certificate) only here."""
        if level == paho.MQTT_LOG_ERR and message.startswith("failed to") and not self._stopping.is_set():
            self._socket_log = message

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        with self._own_lock:
            self._own.pop(mid, None)
        self._sender.acked(mid, reason)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.cosignature_topic and self._on_cosignature is not None:
            try:
                self._on_cosignature(bytes(msg.payload))
            except Exception:  # a full disk or a bad note never stops the link
                logger.exception("keeping a cosigned checkpoint failed")
            return
        try:
            if self._discovery is not None and msg.topic == self._discovery.status_topic:
                self._on_ha_status(bytes(msg.payload))
                return
            command = self._commands.parse(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        except Exception as exc:
            self._count("rejected")
            logger.warning("ignored an MQTT command: %s", exc, extra={"fields": {"topic": msg.topic}})
            return
        self._count("accepted")
        logger.info("MQTT command %s", command.name, extra={"fields": {"on": command.on}})
        if self._on_command is not None:
            try:
                self._on_command(command)
            except Exception:
                logger.exception("the command handler failed for %s; the agent carries on", command.name)

    def _on_ha_status(self, payload: bytes) -> None:
        """One pending re-announcement at a time, at most one per ``ANNOUNCE_MIN_SECONDS``:
        a flood of births makes one discovery re-send and one timer thread."""
        if payload.strip() != b"online":
            return
        with self._lock:
            if self._announce_timer is not None or self._stopping.is_set():
                self.births_coalesced += 1
                return
            delay = max(0.0, min(5.0, self._jitter()))
            if self._last_announce is not None:
                delay = max(delay, self._last_announce + ANNOUNCE_MIN_SECONDS - time.monotonic())
            timer = threading.Timer(delay, self._reannounce)
            timer.daemon = True
            self._announce_timer = timer
        timer.start()

    def _reannounce(self) -> None:
        with self._lock:
            self._announce_timer = None
            self._last_announce = time.monotonic()
        client = self._client
        if client is None or self._discovery is None or not self._connected.is_set():
            return
        logger.info("Home Assistant restarted: re-sending discovery")
        self._announce(client, first=False)
        self._publish(client, self.status_topic, b"online")

    # --- protocol fallback (sender thread) ----------------------------------------------

    def _maybe_fall_back(self) -> None:
        if self._downgrade.is_set():
            self._fall_back_to_311()

    def _fall_back_to_311(self) -> None:
        """The broker speaks only MQTT 3.1.1: rebuild the client for it (paho fixes it at creation).

        The old client's network thread gets ``FALLBACK_END_S``: paho's ``loop_stop`` waited for
        it without a bound, and a thread that did not end (in a connect, a TLS handshake, a
        blocked log write) held the sender thread and the fallback with it (found by review).
        A thread left running reports nothing: its callbacks that touch the link are removed.

        Once the output is stopping no client is started: the fallback, on the sender thread, can
        outlast ``stop``, and then started a client that connected and published ``online`` and
        discovery after the output had stopped (found by review)."""
        self._downgrade.clear()
        old = self._client
        if old is None or self._protocol == MQTTProtocolVersion.MQTTv311 or self._stopping.is_set():
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
        with self._lock:  # as ``stop`` sets ``_stopping``: it ends this client, or there is none
            if self._stopping.is_set():
                logger.info("MQTT: the output is stopping; no MQTT 3.1.1 client is started")
                return
            self._protocol = MQTTProtocolVersion.MQTTv311
            self._sender.forget_inflight()
            self._client = self._build_client()
            self._connect_async(self._client)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic``), never below zero."""
    return max(0.0, deadline - time.monotonic())
