"""The shipped broker config, ACL and Home Assistant automation work as documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.clock import SystemClock
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig, TlsConfig
from agent.transport.spool import DropReport
from tests.mosquitto import Broker, Pki, Subscriber, make_pki, wait_until

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_config"


@pytest.fixture
def example_broker(tmp_path: Path) -> Iterator[tuple[Broker, Pki]]:
    """mosquitto run with the shipped .conf and .acl, only paths and the port rewritten."""
    pki = make_pki(tmp_path / "pki", clients=("lobby-1", "lobby-2", "homeassistant"))
    users = {"lobby-1": "pw1", "lobby-2": "pw2", "homeassistant": "pwha"}
    broker = Broker(tmp_path / "broker", pki=pki, users=users)
    conf = (FIRMWARE / "mosquitto-emotion-agent.conf").read_text()
    for old, new in {
        "/etc/mosquitto/passwd": str(broker.folder / "passwd"),
        "/etc/mosquitto/emotion-agent.acl": str(FIRMWARE / "mosquitto-emotion-agent.acl"),
        "/etc/mosquitto/certs/ca.crt": str(pki.ca),
        "/etc/mosquitto/certs/broker.crt": str(pki.server_cert),
        "/etc/mosquitto/certs/broker.key": str(pki.server_key),
        "/var/lib/mosquitto/": f"{broker.folder}/",
    }.items():
        assert old in conf
        conf = conf.replace(old, new)
    conf = re.sub(r"^listener 8883$", f"listener {broker.port} 127.0.0.1", conf, flags=re.M)
    root = "user root\n" if "user root" in broker.conf.read_text() else ""
    conf += "log_dest stderr\nlog_type all\n" + root
    broker.conf.write_text(conf)
    with broker:
        yield broker, pki


def device(
    broker: Broker, pki: Pki, tmp_path: Path, name: str, password: str, *, cert: bool = True, **kw: Any
) -> MqttOutput:
    pw = tmp_path / f"{name}.pw"
    pw.write_text(password)
    pw.chmod(0o600)
    crt, key = pki.clients[name] if cert else (None, None)
    cfg = MqttConfig(host=broker.host, port=broker.port, username=name, password_file=pw,
                     tls=TlsConfig(ca=pki.ca, cert=crt, key=key), reconnect_max_seconds=1)
    return MqttOutput(cfg, device_id=name, state_dir=tmp_path / name, spool_days=7, clock=SystemClock(), **kw)


@pytest.mark.slow
def test_the_example_broker_keeps_each_device_inside_its_own_topics(
    example_broker: tuple[Broker, Pki], tmp_path: Path
) -> None:
    broker, pki = example_broker
    drops: list[DropReport] = []
    with Subscriber(broker, ["emotion-agent/#"], username="homeassistant", password="pwha",
                    cert=pki.clients["homeassistant"]) as ha:
        one = device(broker, pki, tmp_path, "lobby-1", "pw1", on_drop=drops.append)
        one.start()
        try:
            one.send(Message("emotion-agent/lobby-2/stats", b"impersonation"))
            one.publish("stats", b"own window")
            ha.wait_for("emotion-agent/lobby-1/stats")
            wait_until(lambda: one.health().backlog == 0, what="spool drained")
            ha.client.publish("emotion-agent/lobby-1/cmd/checkpoint", b"PRESS", qos=1).wait_for_publish(5)
            wait_until(lambda: one.health().commands_accepted == 1, what="command from Home Assistant")
        finally:
            one.stop()
        # The agent quarantines a foreign row itself; the broker must refuse it as well when a
        # client holding lobby-1's credentials sends it directly.
        raw = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="lobby-1", protocol=paho.MQTTv5)
        raw.username_pw_set("lobby-1", "pw1")
        raw.tls_set(ca_certs=str(pki.ca), certfile=str(pki.clients["lobby-1"][0]),
                    keyfile=str(pki.clients["lobby-1"][1]))
        raw.connect(broker.host, broker.port)
        raw.loop_start()
        try:
            info = raw.publish("emotion-agent/lobby-2/stats", b"impersonation", qos=1)
            info.wait_for_publish(5)
            raw.publish("emotion-agent/lobby-1/stats", b"marker", qos=1).wait_for_publish(5)
            wait_until(lambda: len(ha.on_topic("emotion-agent/lobby-1/stats")) >= 2, what="marker")
        finally:
            raw.disconnect()
            raw.loop_stop()
    assert ha.on_topic("emotion-agent/lobby-2/stats") == []
    assert [d.reason for d in drops] == ["quarantined"]


@pytest.mark.slow
def test_the_example_broker_refuses_anonymous_and_certificate_less_clients(
    example_broker: tuple[Broker, Pki],
) -> None:
    broker, pki = example_broker
    results: list[str] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="anon", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(pki.ca), certfile=str(pki.clients["lobby-1"][0]),
                   keyfile=str(pki.clients["lobby-1"][1]))
    client.on_connect = lambda _c, _u, _f, reason, _p: results.append(str(reason))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: bool(results), what="CONNACK")
    finally:
        client.loop_stop()
        client.disconnect()
    assert results == ["Not authorized"]


@pytest.mark.slow
def test_the_example_broker_refuses_a_right_password_without_a_client_certificate(
    example_broker: tuple[Broker, Pki], tmp_path: Path
) -> None:
    broker, pki = example_broker
    out = device(broker, pki, tmp_path, "lobby-1", "pw1", cert=False)
    out.start()
    try:
        wait_until(lambda: out.health().failures >= 2, what="two failed attempts")
        health = out.health()
    finally:
        out.stop()
    assert health.connects == 0
    assert health.state == "failed"
    assert "certificate" in (health.last_error or ""), health.last_error


def test_the_home_assistant_automation_fires_only_on_a_raised_alert() -> None:
    path = FIRMWARE / "home-assistant-automation.ha.yml"
    (automation,) = yaml.safe_load(path.read_text())
    assert automation["trigger"][0] == {"platform": "mqtt", "topic": "emotion-agent/lobby-1/alert"}
    env = ImmutableSandboxedEnvironment()
    env.filters["timestamp_custom"] = lambda v, fmt, local=True: "10:01"
    condition = env.from_string(automation["condition"][0]["value_template"])
    message = env.from_string(automation["action"][0]["data"]["message"])

    def payload(state: str) -> dict[str, Any]:
        body = {"rule": "stress", "state": state, "value": 450, "threshold": 400,
                "window_start": 1_700_000_400, "window_end": 1_700_000_460}
        return {"trigger": {"payload_json": {"typ": "alert", "body": body}}}

    assert condition.render(payload("raised")) == "True"
    assert condition.render(payload("cleared")) == "False"
    text = message.render(payload("raised"))
    assert "Rule stress was raised" in text
    assert "value 450, threshold" in text
