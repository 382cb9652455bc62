"""MQTT 5 inbox: a shared subscription per replica group, plain ones for retained topics.

paho's ``manual_ack`` holds each PUBACK until the receiver has committed the message, and a
persistent session (``clean_start=False``, session expiry) keeps what was in flight for a
replica that is restarted, so a kill between delivery and commit loses nothing. A broker that
cannot be reached is logged, with the socket's error, as the agent logs it (it said nothing
after "receiver running": found by review).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker_files import read_password, tls_context
from agent.fleet.inbox import DEVICE_PREFIX, RETAINED_TOPICS, SHARED_TOPICS, Delivery, Handler
from agent.fleet.settings import MqttSourceSettings
from agent.log_throttle import Throttled
from agent.mqtt_client import PahoClient, paho

logger = logging.getLogger(__name__)

SESSION_EXPIRY_S = 3600
STOP_WAIT_S = 2.0
"""How long ``stop`` waits for paho's DISCONNECT to be written (``PahoClient.end_within``)."""


def subscriptions(group: str) -> list[str]:
    shared = [f"$share/{group}/{DEVICE_PREFIX}/+/{t}" for t in SHARED_TOPICS]
    return shared + [f"{DEVICE_PREFIX}/+/{t}" for t in RETAINED_TOPICS]


class MqttInbox:
    def __init__(self, settings: MqttSourceSettings, client_id: str) -> None:
        self.settings = settings
        self._queue: queue.Queue[paho.MQTTMessage | None] = queue.Queue(maxsize=1000)
        self._client = PahoClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
        )
        self._client.host_key = "source.host"
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._stopping = threading.Event()
        self._warn = Throttled(logger)
        self._worker: threading.Thread | None = None
        self._handler: Handler | None = None
        self.connected = threading.Event()
        self.error: BaseException | None = None
        """Never set: paho connects again by itself (``reconnect_delay_set``)."""
        if settings.tls is not None:  # the files checked as the agent's, each error naming its key
            self._client.tls_set_context(tls_context(settings.tls, "source.tls"))
        if settings.username is not None:
            password = None
            if settings.password_file is not None:
                password = read_password(settings.password_file, "source.password_file")
            self._client.username_pw_set(settings.username, password)
        self._client.reconnect_delay_set(1, 30)

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:  # paho then calls on_disconnect too, which says nothing of it
            self._warn.warning("refused", "broker %s refused the receiver: %s; retrying", self._where, reason)
            return
        client.subscribe([(topic, 1) for topic in subscriptions(self.settings.share_group)])
        self.connected.set()
        logger.info("connected to the broker %s", self._where)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        exc = self._client.last_socket_error
        error = f"{exc.__class__.__name__}: {exc}" if exc is not None else "connection failed"
        self._warn.warning("connect", "cannot connect to the broker %s: %s; retrying", self._where, error)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        """Also after a refused CONNECT (paho 2.x), which is no connection lost."""
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping.is_set():
            self._warn.warning("lost", "lost the broker %s (%s); reconnecting", self._where, reason)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put(msg)

    def start(self, handler: Handler) -> None:
        self._handler = handler
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._worker = threading.Thread(target=self._work, name="fleet-mqtt", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None or self._handler is None:
                return
            mid, qos = msg.mid, msg.qos

            def ack(mid: int = mid, qos: int = qos) -> None:
                self._client.ack(mid, qos)

            try:
                self._handler(Delivery(msg.topic, bytes(msg.payload), int(time.time() * 1000), ack))
            except Exception:  # a failing message is logged and left unacknowledged
                logger.exception("receiver failed on a message", extra={"topic": msg.topic})

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=5)
        if not self._client.end_within(STOP_WAIT_S):
            logger.warning("paho's network thread did not end; it ends with the process")
