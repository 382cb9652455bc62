"""Review findings on discovery / topics (each test fails on the code as reviewed).

1. ``device`` mode: a reload (or restart) that removes an alert rule only *omits* the rule's
   component from the next device message. Home Assistant 2024.11+ (core
   ``mqtt/discovery.py``: the device branch of ``async_discovery_message_received`` dispatches
   one update per component *present* in ``cmps``; ``entity.py``
   ``MqttDiscoveryUpdateMixin._async_discovery_callback`` removes an entity only on an *empty*
   payload for its own discovery hash, which a device message produces only for a component
   sent as ``{"p": <platform>}``) never removes an omitted component: the old ``Alert <rule>``
   entity stays in Home Assistant.
2. ``topic_problem`` accepts C1 control characters and Unicode non-characters in
   ``mqtt.base_topic`` / ``discovery_prefix``; mosquitto refuses such a topic (it drops the
   connection), so the agent loops on connect with a config that check-config passed.
3. With ``mqtt.commands.enabled: false`` the agent subscribes to no command topic, yet still
   announces the privacy switch and the checkpoint button with their command topics.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.clock import SystemClock
from agent.transport.discovery import DiscoverySpec, announcements
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import CommandsConfig, DiscoveryConfig, MqttConfig, topic_problem
from tests.mosquitto import Broker, Subscriber, wait_until
from tests.transport.test_discovery_modes import (  # noqa: F401 - fixtures
    BASE,
    DEVICE,
    USERS,
    broker,
    pki,
    started,
)

# Home Assistant core, homeassistant/components/mqtt/discovery.py
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def ha_2024_11_apply(entities: dict[tuple[str, str], dict], prefix: str, topic: str, payload: bytes) -> None:
    """What Home Assistant 2024.11+ does with one discovery message, reduced to the set of
    entities it holds, keyed by discovery hash (platform, discovery id)."""
    match = TOPIC_MATCHER.match(topic[len(prefix) + 1:])
    assert match is not None, topic
    component, node_id, object_id = match.groups()
    if component == "device":
        if not payload:  # _generate_device_config: every component of this device, removed
            for key in [k for k in entities if k[1].split(" ")[0] == object_id]:
                del entities[key]
            return
        message = json.loads(payload)
        for component_id, announced in message["cmps"].items():
            config = dict(announced)
            platform = config.pop("p")
            key = (platform, f"{object_id} {component_id}")
            if config:
                entities[key] = config
            else:  # {"p": ...} only: an empty payload for this component, which removes it
                entities.pop(key, None)
        # components absent from cmps get no dispatch at all: they stay
        return
    key = (component, f"{node_id} {object_id}" if node_id else object_id)
    if payload:
        entities[key] = json.loads(payload)
    else:
        entities.pop(key, None)


@pytest.mark.slow
def test_device_mode_reload_removing_an_alert_rule_removes_its_entity_in_home_assistant(
    broker: Broker, tmp_path: Path  # noqa: F811
) -> None:
    assert broker.pki is not None
    two = DiscoverySpec(DEVICE, BASE, alert_rules=("stress", "crowd"))
    one = DiscoverySpec(DEVICE, BASE, alert_rules=("stress",))
    with Subscriber(broker, ["homeassistant/#"], username="dashboard", password=USERS["dashboard"],
                    cert=broker.pki.clients["dashboard"], client_id="ha") as ha:
        ha.subscribed.wait(10)
        out = started(broker, tmp_path / "state", "device", two)
        try:
            wait_until(lambda: ha.on_topic(two.topic), what="device message")
            out.update_discovery(one)  # SIGHUP: the rule `crowd` is gone
            wait_until(lambda: len(ha.on_topic(two.topic)) >= 2, what="re-announcement")
        finally:
            out.stop()
        time.sleep(0.3)
        entities: dict[tuple[str, str], dict] = {}
        for m in list(ha.messages):
            ha_2024_11_apply(entities, "homeassistant", m.topic, m.payload)
    alerts = sorted(k[1] for k in entities if k[0] == "binary_sensor")
    assert alerts == [f"emotion_agent_{DEVICE} alert_stress"], (
        f"Home Assistant still holds {alerts}: the removed rule's component was omitted from "
        "cmps instead of being sent as {'p': 'binary_sensor'}"
    )


@pytest.mark.slow
def test_device_mode_restart_without_an_alert_rule_removes_its_entity_in_home_assistant(
    broker: Broker, tmp_path: Path  # noqa: F811
) -> None:
    assert broker.pki is not None
    two = DiscoverySpec(DEVICE, BASE, alert_rules=("stress", "crowd"))
    one = DiscoverySpec(DEVICE, BASE, alert_rules=("stress",))
    state = tmp_path / "state"
    with Subscriber(broker, ["homeassistant/#"], username="dashboard", password=USERS["dashboard"],
                    cert=broker.pki.clients["dashboard"], client_id="ha") as ha:
        ha.subscribed.wait(10)
        started(broker, state, "device", two).stop()
        started(broker, state, "device", one).stop()  # config edited, agent restarted
        time.sleep(0.3)
        entities: dict[tuple[str, str], dict] = {}
        for m in list(ha.messages):
            ha_2024_11_apply(entities, "homeassistant", m.topic, m.payload)
    alerts = sorted(k[1] for k in entities if k[0] == "binary_sensor")
    assert alerts == [f"emotion_agent_{DEVICE} alert_stress"], f"Home Assistant still holds {alerts}"


@pytest.mark.parametrize("bad", ["\u0085", "\u009f", "\ufdd0", "\uffff"])
def test_a_base_topic_mosquitto_refuses_is_refused_by_the_config(tmp_path: Path, bad: str) -> None:
    topic = f"emotion-agent/lobby{bad}1"
    # mosquitto 2.0 (lib/utf8_mosq.c) drops a client that publishes to such a topic
    with Broker(tmp_path / "broker", allow_anonymous=True) as b:
        events: list[str] = []
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="probe")
        c.on_disconnect = lambda *_a: events.append("disconnected")
        c.on_publish = lambda *_a: events.append("acked")
        c.connect(b.host, b.port)
        c.loop_start()
        try:
            c.publish(f"{topic}/status", b"online", qos=1, retain=True)
            wait_until(lambda: events, what="an answer")
        finally:
            c.loop_stop()
        assert events[0] == "disconnected"
    assert topic_problem(topic) is not None, f"{topic!r} passes the config but the broker refuses it"


def test_with_commands_disabled_no_entity_offers_a_command_home_assistant_cannot_send(tmp_path: Path) -> None:
    cfg = MqttConfig(host="127.0.0.1", port=1, discovery=DiscoveryConfig(mode="entities"),
                     commands=CommandsConfig(enabled=False))
    out = MqttOutput(cfg, device_id=DEVICE, state_dir=tmp_path, spool_days=1, clock=SystemClock(),
                     discovery=DiscoverySpec(DEVICE, BASE))
    try:
        assert out.discovery is not None
        controls = sorted(topic for topic, payload in announcements(out.discovery).items()
                          if "command_topic" in json.loads(payload))
    finally:
        out.stop(timeout=0.1)
    assert controls == [], (
        f"commands are off (nothing subscribed) but Home Assistant shows controls: {controls}"
    )
