"""paho's client as the ``mqtt`` settings ask for it, and its connection queued.

Apart from the output so that the MQTT 3.1.1 fallback builds its new client exactly as the first
one was built: paho fixes the protocol when the client is created.
"""

from __future__ import annotations

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker_files import read_password, tls_context
from agent.mqtt_client import PahoClient
from agent.transport.settings import MqttConfig

MAX_INCOMING_BYTES = 4096
"""MQTT 5 Maximum Packet Size we announce: the broker never forwards us anything larger."""


def new_client(
    settings: MqttConfig, *, client_id: str, status_topic: str, protocol: MQTTProtocolVersion
) -> PahoClient:
    """A client with the retained ``offline`` will on ``status_topic``, the reconnect backoff,
    the in-flight window, the credentials and TLS; its callbacks are the caller's to set."""
    s = settings
    client = PahoClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.will_set(status_topic, "offline", qos=1, retain=True)
    client.reconnect_delay_set(s.reconnect_min_seconds, s.reconnect_max_seconds)
    client.max_inflight_messages_set(s.max_inflight)
    if s.username is not None:
        password = read_password(s.password_file) if s.password_file is not None else None
        client.username_pw_set(s.username, password)
    if s.tls is not None:  # the files checked again: they may have changed since the preflight
        client.tls_set_context(tls_context(s.tls))
    return client


def connect_async(client: PahoClient, settings: MqttConfig, protocol: MQTTProtocolVersion) -> None:
    """Queue the connection and start paho's thread; it retries with backoff until stopped."""
    props = None
    if protocol == MQTTProtocolVersion.MQTTv5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.MaximumPacketSize = MAX_INCOMING_BYTES
    client.connect_async(
        settings.host,
        settings.port,
        settings.keepalive_seconds,
        clean_start=True,
        properties=props,
    )
    client.loop_start()
