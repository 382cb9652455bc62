"""The shipped broker config (on stock Debian mosquitto), ACL and Home Assistant automation work."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent.cli import main as cli_main
from agent.clock import SystemClock
from agent.config import parse_config
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from tests.mosquitto import Broker, Pki, Subscriber, make_pki, wait_until

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_config"


DEBIAN_CONF = Path("/etc/mosquitto/mosquitto.conf")  # the mosquitto package's own main file


@pytest.fixture
def example_broker(tmp_path: Path) -> Iterator[tuple[Broker, Pki]]:
    """Debian's stock /etc/mosquitto layout: its mosquitto.conf, our conf.d snippet and ACL."""
    with debian_broker(tmp_path) as running:
        yield running


@contextmanager
def debian_broker(tmp_path: Path, without: str = "") -> Iterator[tuple[Broker, Pki]]:
    """Debian's stock /etc/mosquitto layout: its mosquitto.conf, our conf.d snippet and ACL.

    Only paths and the port are rewritten; nothing is added to either file but `user root`
    (mosquitto would otherwise drop to the `mosquitto` user, which cannot read the test's files).
    ``without``: a line of the snippet left out (an experiment on what it does).
    """
    pki = make_pki(tmp_path / "pki", clients=("lobby-1", "lobby-2", "homeassistant", "emotion-agent-auditor"))
    broker = Broker(tmp_path / "broker", pki=pki)
    etc = tmp_path / "etc-mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    main = DEBIAN_CONF.read_text()
    for old, new in {
        "/run/mosquitto/mosquitto.pid": str(tmp_path / "mosquitto.pid"),
        "/var/lib/mosquitto/": f"{broker.folder}/",
        "log_dest file /var/log/mosquitto/mosquitto.log": "log_dest stderr\nlog_type all",
        "/etc/mosquitto/conf.d": str(etc / "conf.d"),
    }.items():
        assert old in main, f"{DEBIAN_CONF} is not Debian's stock file ({old!r} missing)"
        main = main.replace(old, new)
    snippet = (FIRMWARE / "mosquitto-emotion-agent.conf").read_text()
    for old, new in {
        "/etc/mosquitto/emotion-agent.acl": str(FIRMWARE / "mosquitto-emotion-agent.acl"),
        "/etc/mosquitto/certs/ca.crt": str(pki.ca),
        "/etc/mosquitto/certs/broker.crt": str(pki.server_cert),
        "/etc/mosquitto/certs/broker.key": str(pki.server_key),
    }.items():
        assert old in snippet
        snippet = snippet.replace(old, new)
    if without:
        assert f"\n{without}\n" in snippet
        snippet = snippet.replace(f"\n{without}\n", "\n")
    snippet = re.sub(r"^listener 8883$", f"listener {broker.port} 127.0.0.1", snippet, flags=re.M)
    (etc / "conf.d" / "emotion-agent.conf").write_text(snippet)
    root = "user root\n" if "user root" in broker.conf.read_text() else ""
    broker.conf.write_text(main + root)
    with broker:
        yield broker, pki


def device(broker: Broker, tmp_path: Path, bundle: Path, name: str, **kw: Any) -> MqttOutput:
    """The agent's MQTT output configured from the provisioned agent.yaml (files read from the bundle)."""
    text = (bundle / "agent.yaml").read_text().replace("/etc/emotion-agent/", f"{bundle}/")
    cfg = parse_config(text, "agent.yaml")
    assert cfg.mqtt.password_file is None  # the certificate is the whole identity
    mqtt = cfg.mqtt.model_copy(update={"reconnect_max_seconds": 1})
    state = tmp_path / name
    return MqttOutput(mqtt, device_id=name, state_dir=state, spool_days=7, clock=SystemClock(), **kw)


def bundle_of(tmp_path: Path, pki: Pki, broker: Broker, name: str) -> Path:
    boot = tmp_path / f"{name}-boot"
    boot.mkdir()
    (boot / "config.txt").write_text("arm_64bit=1\n")
    assert pki.ca_key is not None
    site = tmp_path / f"{name}-site.yml"
    site.write_text(
        f"device_name: {name}\nbroker: {{host: {broker.host}, port: {broker.port}, ca_cert: {pki.ca}}}\n"
        "site: {jurisdiction: US, context: retail, purpose: analytics}\n"
        f"lab_ca: {{cert: {pki.ca}, key: {pki.ca_key}}}\n"
    )
    assert cli_main(["provision", "--site", str(site), "--boot", str(boot)]) == 0
    return boot / "emotion-agent"


@pytest.mark.slow
def test_a_provisioned_device_publishes_on_stock_debian_mosquitto_and_others_cannot_act_for_it(
    example_broker: tuple[Broker, Pki], tmp_path: Path
) -> None:
    broker, pki = example_broker
    bundle = bundle_of(tmp_path, pki, broker, "lobby-1")
    with Subscriber(broker, ["emotion-agent/#"], cert=pki.clients["homeassistant"],
                    client_id="homeassistant") as ha:
        one = device(broker, tmp_path, bundle, "lobby-1")
        one.start()
        try:
            one.send(Message(f"{one.base_topic}/stats", b"own window"))
            ha.wait_for("emotion-agent/lobby-1/stats")
            wait_until(lambda: one.health().backlog == 0, what="spool drained")
            # Another device's certificate: cannot publish as lobby-1, nor command it, nor take
            # over its session by reusing its client id (the broker forces client id = CN).
            other = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=one.client_id,
                                protocol=paho.MQTTv5)
            other.tls_set(ca_certs=str(pki.ca), certfile=str(pki.clients["lobby-2"][0]),
                          keyfile=str(pki.clients["lobby-2"][1]))
            other.connect(broker.host, broker.port)
            other.loop_start()
            try:
                refused = [
                    other.publish("emotion-agent/lobby-1/stats", b"forged", qos=1),
                    other.publish("emotion-agent/lobby-1/cmd/checkpoint", b"PRESS", qos=1),
                ]
                for info in refused:
                    info.wait_for_publish(5)
            finally:
                other.loop_stop()
                other.disconnect()
            ha.client.publish("emotion-agent/lobby-1/cmd/checkpoint", b"PRESS", qos=1).wait_for_publish(5)
            wait_until(lambda: one.health().commands_accepted == 1, what="command from Home Assistant")
            health = one.health()
        finally:
            one.stop()
    assert [m.payload for m in ha.on_topic("emotion-agent/lobby-1/stats")] == [b"own window"]
    assert health.commands_accepted == 1  # lobby-2's command was refused by the ACL
    assert health.connects == 1  # lobby-2 using lobby-1's client id did not kick it off
    assert "Duplicate" not in broker.log_text()


@pytest.mark.slow
def test_an_auditor_records_every_device_beside_home_assistant_and_can_send_nothing(
    example_broker: tuple[Broker, Pki], tmp_path: Path
) -> None:
    """The docs recorded the feed with Home Assistant's certificate: same name, same client id
    (use_username_as_clientid), so the recording and Home Assistant kicked each other off the
    broker every second (found by a new-user trial). The auditor's certificate reads every
    device's topics, beside Home Assistant, and cannot command a device or write as one."""
    broker, pki = example_broker
    bundle = bundle_of(tmp_path, pki, broker, "lobby-1")
    with (
        Subscriber(broker, ["emotion-agent/#"], cert=pki.clients["homeassistant"],
                   client_id="homeassistant") as ha,
        Subscriber(broker, ["emotion-agent/#"], cert=pki.clients["emotion-agent-auditor"],
                   client_id="recording") as auditor,
    ):
        one = device(broker, tmp_path, bundle, "lobby-1")
        one.start()
        try:
            for topic in ("emotion-agent/lobby-1/cmd/checkpoint", "emotion-agent/lobby-1/stats"):
                auditor.client.publish(topic, b"from the auditor", qos=1).wait_for_publish(5)
            one.send(Message(f"{one.base_topic}/stats", b"own window"))
            auditor.wait_for("emotion-agent/lobby-1/stats")
            ha.wait_for("emotion-agent/lobby-1/stats")
            time.sleep(0.5)  # what the auditor's publishes would have done has reached everyone
            health = one.health()
        finally:
            one.stop()
    for client in (auditor, ha):
        assert [m.payload for m in client.on_topic("emotion-agent/lobby-1/stats")] == [b"own window"]
    assert health.commands_accepted == 0
    assert "already connected" not in broker.log_text()


@pytest.mark.slow
def test_the_example_broker_refuses_clients_without_a_certificate_of_the_site_ca(
    example_broker: tuple[Broker, Pki],
) -> None:
    broker, pki = example_broker
    results: list[str] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="anon", protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(pki.ca))  # no client certificate
    client.on_connect = lambda _c, _u, _f, reason, _p: results.append(str(reason))
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        wait_until(lambda: bool(results), timeout=3, what="CONNACK")
    except (OSError, AssertionError) as exc:  # the TLS handshake itself fails without a certificate
        results.append(type(exc).__name__)
    finally:
        client.loop_stop()
        client.disconnect()
    assert results
    assert "Success" not in results


def test_the_home_assistant_automation_fires_only_on_a_raised_alert() -> None:
    path = FIRMWARE / "home-assistant-automation.ha.yml"
    (automation,) = yaml.safe_load(path.read_text())
    assert automation["trigger"][0] == {"platform": "mqtt", "topic": "emotion-agent/lobby-1/alert"}
    env = ImmutableSandboxedEnvironment()
    env.filters["timestamp_custom"] = lambda v, fmt, local=True: "10:01"
    condition = env.from_string(automation["condition"][0]["value_template"])
    message = env.from_string(automation["action"][0]["data"]["message"])

    def payload(state: str, **over: Any) -> dict[str, Any]:
        body = {"rule": "stress", "state": state, "metric": "share", "mode": "absolute", "value": 450,
                "threshold": 400, "z_milli": None, "baseline_milli": None,
                "window_start": 1_700_000_400, "window_end": 1_700_000_460} | over
        return {"trigger": {"payload_json": {"typ": "alert", "body": body}}}

    assert condition.render(payload("raised")) == "True"
    assert condition.render(payload("cleared")) == "False"
    text = " ".join(message.render(payload("raised")).split())
    assert "Rule stress was raised" in text
    # in natural units (it said "value 450, threshold 400" for a rule written threshold: 0.4)
    assert "(share 0.45, threshold 0.4)" in text, text
    crowd = " ".join(message.render(payload("raised", metric="people", value=12, threshold=10)).split())
    assert "(people 12, threshold 10)" in crowd, crowd
    usual = " ".join(message.render(payload("raised", mode="baseline", z_milli=2300, threshold=2000)).split())
    assert "(share 0.45, 2.3 standard deviations from the usual, threshold 2.0)" in usual, usual


def _takeover(broker: Broker, pki: Pki, client_id: str) -> tuple[list[str], list[str]]:
    """lobby-1 connects with its own certificate and ``client_id``; then lobby-2's certificate
    connects with the same client id. Returns lobby-1's disconnect reasons and lobby-2's CONNACKs."""
    kicked: list[str] = []
    connacks: list[str] = []
    connected: list[bool] = []

    def client(cert: str) -> paho.Client:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.tls_set(ca_certs=str(pki.ca), certfile=str(pki.clients[cert][0]), keyfile=str(pki.clients[cert][1]))
        return c

    one, two = client("lobby-1"), client("lobby-2")
    one.on_connect = lambda _c, _u, _f, reason, _p: connected.append(not reason.is_failure)
    one.on_disconnect = lambda _c, _u, _f, reason, _p: kicked.append(str(reason))
    two.on_connect = lambda _c, _u, _f, reason, _p: connacks.append(str(reason))
    one.connect(broker.host, broker.port)
    one.loop_start()
    try:
        wait_until(lambda: connected == [True], timeout=5, what="lobby-1 connected")
        two.connect(broker.host, broker.port)
        two.loop_start()
        try:
            wait_until(lambda: bool(connacks), timeout=5, what="lobby-2's CONNACK")
            time.sleep(0.5)  # a takeover closes lobby-1's connection right after lobby-2's CONNACK
        finally:
            two.loop_stop()
            two.disconnect()
            time.sleep(0.2)
    finally:
        one.loop_stop()
        one.disconnect()
    return kicked[:-1], connacks  # the last of lobby-1's disconnects is its own, at the end


@pytest.mark.slow
@pytest.mark.parametrize("kept", [True, False], ids=["shipped", "without-use_username_as_clientid"])
def test_use_username_as_clientid_stops_another_certificate_taking_over_a_device_session(
    tmp_path: Path, kept: bool
) -> None:
    """Found on mosquitto 2.0.11: the option is per listener. Placed before `listener 8883` (as
    first shipped) it set the unused default listener and lobby-2 could take over lobby-1's
    session by sending its client id; under the listener line the broker renames lobby-2's
    connection to its certificate's CN and lobby-1 stays connected."""
    with debian_broker(tmp_path, without="" if kept else "use_username_as_clientid true") as (broker, pki):
        kicked, connacks = _takeover(broker, pki, client_id="emotion-agent-lobby-1")
        log = broker.log_text()
    assert connacks == ["Success"]  # lobby-2 is a valid client either way
    if kept:
        assert kicked == []
        assert "as lobby-2 (p5" in log
        assert "already connected, closing old connection" not in log
    else:
        assert kicked  # lobby-1 was thrown off by another device's certificate
        assert "Client emotion-agent-lobby-1 already connected, closing old connection" in log
        assert "as emotion-agent-lobby-1 (p5, c1, k60, u'lobby-2')" in log
