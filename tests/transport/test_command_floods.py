"""Floods and impostors on a real mosquitto (issue 18 item 5): Home Assistant births are
debounced, a client reusing our id is detected and not fought, and privacy OFF can require the
operator's signature."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import SystemClock
from agent.crypto import generate_keypair, load_private_key
from agent.crypto.canonical import canonical
from agent.transport.commands import Command, sign_command
from agent.transport.discovery import DiscoverySpec
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
from agent.transport.takeover import TakeoverDetector
from tests.mosquitto import Broker, Subscriber, wait_until

DEVICE = "lobby-1"
BASE = f"emotion-agent/{DEVICE}"


def plain(broker: Broker, **over: Any) -> MqttConfig:
    values: dict[str, Any] = {"host": broker.host, "port": broker.port, "reconnect_min_seconds": 1,
                              "reconnect_max_seconds": 1, "keepalive_seconds": 5}
    return MqttConfig(**(values | over))


def output(cfg: MqttConfig, state: Path, **kw: Any) -> MqttOutput:
    return MqttOutput(cfg, device_id=DEVICE, state_dir=state, spool_days=7, clock=SystemClock(), **kw)


@pytest.mark.slow
def test_200_home_assistant_births_make_one_discovery_resend_and_one_thread(tmp_path: Path) -> None:
    """Before: 200 births made 200 discovery re-sends and 61 threads."""
    spec = DiscoverySpec(DEVICE, BASE)
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        out = output(plain(broker), tmp_path / "state", discovery=spec, jitter=lambda: 0.5)
        with Subscriber(broker, [spec.topic]) as sub:
            out.start()
            try:
                sub.wait_for(spec.topic, 1)
                threads_before = threading.active_count()
                peak = threads_before
                for _ in range(200):
                    sub.client.publish("homeassistant/status", b"online", qos=0)
                    peak = max(peak, threading.active_count())
                wait_until(lambda: out.births_coalesced >= 150, what="births received")
                peak = max(peak, threading.active_count())
                sub.wait_for(spec.topic, 2)
                time.sleep(2)
            finally:
                out.stop()
    assert len(sub.on_topic(spec.topic)) == 2  # the connect's, then one re-send for all births
    assert peak - threads_before <= 1


def test_the_detector_tells_a_takeover_from_a_flaky_network() -> None:
    detector = TakeoverDetector(backoff_seconds=30, short_seconds=10, min_short=3, stable_seconds=120)
    detector.connected(0)
    assert detector.disconnected(500, 0) is None  # a long connection lost: the network
    detector.connected(501)
    first = detector.disconnected(502, 142)
    assert first is not None
    assert first.wait_seconds == 30
    assert "reason 142" in first.reason
    detector.connected(540)
    second = detector.disconnected(541, 142)
    assert second is not None
    assert second.wait_seconds == 60  # doubles
    for t in (700, 702, 704):  # 3.1.1: no reason, connections lost within seconds
        detector.connected(t)
        verdict = detector.disconnected(t + 1, 0)
    assert verdict is not None
    assert "3 connections in a row were lost within 10 s" in verdict.reason
    detector.connected(1000)
    assert detector.disconnected(1200, 0) is None  # stable again: the wait resets
    assert not detector.backing_off


class Intruder:
    """A client holding valid access that reuses the agent's client id and reconnects at once."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.connects = 0
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.connect_async(broker.host, broker.port, keepalive=5)

    def _on_connect(self, *_a: Any) -> None:
        self.connects += 1

    def __enter__(self) -> Intruder:
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_a_client_reusing_our_id_is_detected_audited_and_not_fought(tmp_path: Path) -> None:
    """Before: the agent and the intruder took the session from each other every second (58
    takeovers, Home Assistant showing offline 11 times)."""
    events: list[tuple[str, str]] = []
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        cfg = plain(broker, protocol="5", takeover_backoff_seconds=30)
        out = output(cfg, tmp_path / "state", on_event=lambda c, m: events.append((c, m)))
        out.start()
        try:
            wait_until(lambda: out.health().connects == 1, what="agent connected")
            with Intruder(broker, out.client_id) as intruder:
                time.sleep(12)
            health = out.health()
        finally:
            out.stop()
    assert health.connects <= 2, f"the agent flapped: {health.connects} connects in 12 s"
    assert health.takeovers >= 1
    assert intruder.connects >= 1
    assert events
    code, message = events[0]
    assert code == "session_takeover"
    assert f"another client uses client id {out.client_id!r}" in message
    assert "waiting 30 s before reconnecting" in message


def signed_off(key: Ed25519PrivateKey, nonce: str, device: str = DEVICE) -> bytes:
    return canonical(sign_command(key, device, "OFF", int(time.time() * 1000), nonce))


@pytest.mark.slow
def test_privacy_off_needs_the_operator_signature_when_a_key_is_configured(tmp_path: Path) -> None:
    """Before: anonymous, unsigned and replayed privacy_mode commands were all obeyed."""
    info = generate_keypair(tmp_path / "operator")
    operator = load_private_key(info.private_path)
    stranger = Ed25519PrivateKey.generate()
    received: list[Command] = []
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker:
        cfg = plain(broker, commands={"operator_key": info.jwk_path})
        out = output(cfg, tmp_path / "state", on_command=received.append)
        with Subscriber(broker, ["nothing/#"], client_id="sender") as cmd:
            out.start()
            try:
                wait_until(lambda: out.health().connects == 1, what="connected")
                time.sleep(0.5)
                topic = f"{BASE}/cmd/privacy_mode/set"
                for payload in (b"OFF", signed_off(stranger, "s" * 16),
                                signed_off(operator, "o" * 16, device="lobby-2"), b"ON"):
                    cmd.client.publish(topic, payload, qos=1).wait_for_publish(5)
                good = signed_off(operator, "g" * 16)
                cmd.client.publish(topic, good, qos=1).wait_for_publish(5)
                wait_until(lambda: len(received) == 2, what="ON and the signed OFF")
                health = out.health()
            finally:
                out.stop()
    assert [c.on for c in received] == [True, False]
    assert received[1].nonce == "g" * 16
    assert health.commands_rejected == 3
