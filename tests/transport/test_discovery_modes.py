"""Discovery modes against a real mosquitto: switching modes leaves only the new mode's configs,
and a reload's new alert rules and window reach Home Assistant while the agent runs.

Each case runs the agent's MQTT output once per mode, in turn, with the same state folder, then
reads what the broker retains under ``homeassistant/#`` with a fresh subscriber, as a Home
Assistant that starts afterwards would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.outputs.base import Message
from agent.transport.announced import FILE_NAME, load_announced
from agent.transport.discovery import DiscoverySpec, announcements
from agent.transport.link import LinkState
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import DiscoveryConfig, MqttConfig, TlsConfig
from tests.mosquitto import ACL_PER_DEVICE, Broker, Pki, Subscriber, make_pki, wait_until

DEVICE = "lobby-1"
BASE = f"emotion-agent/{DEVICE}"
USERS = {DEVICE: "pw-device", "dashboard": "pw-dash"}
SPEC = DiscoverySpec(DEVICE, BASE, alert_rules=("stress",))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), clients=(DEVICE, "dashboard"))


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    with Broker(tmp_path / "broker", pki=pki, users=USERS, acl=ACL_PER_DEVICE) as b:
        yield b


def started(broker: Broker, state: Path, mode: str, spec: DiscoverySpec = SPEC) -> MqttOutput:
    """The output in ``mode``, connected."""
    assert broker.pki is not None
    pw = state.parent / "pw"
    pw.write_text(USERS[DEVICE] + "\n")
    pw.chmod(0o600)
    crt, key = broker.pki.clients[DEVICE]
    cfg = MqttConfig(host=broker.host, port=broker.port, tls=TlsConfig(ca=broker.pki.ca, cert=crt, key=key),
                     username=DEVICE, password_file=pw, discovery=DiscoveryConfig(mode=mode),  # type: ignore[arg-type]
                     reconnect_min_seconds=1, reconnect_max_seconds=1)
    out = MqttOutput(cfg, device_id=DEVICE, state_dir=state, spool_days=1, clock=SystemClock(),
                     discovery=spec)
    out.start()
    try:
        wait_until(lambda: out.health().state == "connected", what="connected")
    except BaseException:
        out.stop()
        raise
    return out


def run_once(broker: Broker, state: Path, mode: str, spec: DiscoverySpec = SPEC) -> None:
    """Start the output in ``mode``, wait until it is connected and its messages are out, stop."""
    started(broker, state, mode, spec).stop()  # `offline` after the discovery messages, in order


def retained(broker: Broker, topic: str = "homeassistant/#") -> dict[str, bytes]:
    """What a Home Assistant starting now would receive under ``topic``."""
    assert broker.pki is not None
    with Subscriber(broker, [topic], username="dashboard", password=USERS["dashboard"],
                    cert=broker.pki.clients["dashboard"], client_id="late-ha") as sub:
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 0.5:  # retained messages follow SUBACK at once
            if len(sub.messages) != seen:
                seen, quiet_since = len(sub.messages), time.monotonic()
            time.sleep(0.05)
        return {m.topic: m.payload for m in sub.messages if m.retain and m.payload}


def topics_of(mode: str, spec: DiscoverySpec = SPEC) -> set[str]:
    return set(announcements(DiscoverySpec(**{**_fields(spec), "mode": mode})))


def _fields(spec: DiscoverySpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


@pytest.mark.slow
def test_switching_device_entities_off_and_back_leaves_only_the_current_modes_configs(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    run_once(broker, state, "device")
    assert set(retained(broker)) == topics_of("device") == {SPEC.topic}

    run_once(broker, state, "entities")
    now = retained(broker)
    assert set(now) == topics_of("entities")
    assert len(now) == 17 + 1
    people = json.loads(now[f"homeassistant/sensor/emotion_agent_{DEVICE}/people/config"])
    assert people["unique_id"] == f"emotion_agent_{DEVICE}_people"
    assert people["availability_topic"] == f"{BASE}/status"

    run_once(broker, state, "off")
    assert retained(broker) == {}

    run_once(broker, state, "device")
    assert set(retained(broker)) == {SPEC.topic}


@pytest.mark.slow
def test_without_a_record_the_other_modes_topics_are_cleared_anyway(broker: Broker, tmp_path: Path) -> None:
    """An agent upgraded from the device-only version, or a lost state folder."""
    state = tmp_path / "state"
    run_once(broker, state, "device")
    (state / FILE_NAME).unlink()
    run_once(broker, state, "entities")
    assert set(retained(broker)) == topics_of("entities")


@pytest.mark.slow
def test_a_removed_alert_rule_loses_its_entity_config(broker: Broker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    two = DiscoverySpec(DEVICE, BASE, alert_rules=("stress", "crowd"))
    run_once(broker, state, "entities", two)
    assert f"homeassistant/binary_sensor/emotion_agent_{DEVICE}/alert_crowd/config" in retained(broker)
    run_once(broker, state, "entities", SPEC)
    assert set(retained(broker)) == topics_of("entities", SPEC)


TWO = DiscoverySpec(DEVICE, BASE, window_seconds=10, alert_rules=("stress", "crowd"))
RELOADED = DiscoverySpec(DEVICE, BASE, window_seconds=60, alert_rules=("stress", "fresh"))
"""A reload drops ``crowd``, adds ``fresh`` and makes the window 60 s."""


def entity(key: str, platform: str = "binary_sensor") -> str:
    return f"homeassistant/{platform}/emotion_agent_{DEVICE}/{key}/config"


@pytest.mark.slow
def test_a_reload_while_connected_retracts_a_removed_rule_announces_a_new_one_and_the_new_window(
    broker: Broker, tmp_path: Path
) -> None:
    """Before: the spec was fixed at start; a removed rule kept its entity and its retained
    state, a new rule had none, and expire_after stayed 3 x the old window."""
    state = tmp_path / "state"
    out = started(broker, state, "entities", TWO)
    try:
        assert entity("alert_crowd") in retained(broker)
        # The rule's last state is spooled just before the reload: it must not land after the clear.
        last_state = b'{"body": {"rule": "crowd", "state": "cleared"}}'
        out.send(Message(f"{BASE}/alert/crowd", last_state, retain=True))
        out.update_discovery(RELOADED)
    finally:
        out.stop()
    now = retained(broker)
    assert set(now) == topics_of("entities", RELOADED)
    assert entity("alert_fresh") in now
    assert json.loads(now[entity("people", "sensor")])["expire_after"] == 3 * 60
    assert set(retained(broker, f"{BASE}/alert/#")) == set(), "the removed rule's state is still retained"
    assert set(load_announced(state) or ()) == topics_of("entities", RELOADED)
    run_once(broker, state, "entities", SPEC)  # the next run retracts what the reload announced
    assert set(retained(broker)) == topics_of("entities", SPEC)


@pytest.mark.slow
def test_a_reload_while_disconnected_is_announced_at_the_reconnect_with_the_old_entities_retracted(
    pki: Pki, tmp_path: Path
) -> None:
    with Broker(tmp_path / "broker", pki=pki, users=USERS, acl=ACL_PER_DEVICE, persistence=True) as broker:
        out = started(broker, tmp_path / "state", "entities", TWO)
        try:
            # Acknowledged in order: once this row is, so is the discovery before it (paho would
            # re-send an unacknowledged config after the reconnect's retraction).
            out.send(Message(f"{BASE}/stats", b"{}"))
            wait_until(lambda: out.health().backlog == 0, what="discovery acknowledged")
            broker.stop()  # retained messages are kept (persistence)
            wait_until(lambda: out.state != LinkState.CONNECTED, what="outage seen")
            out.update_discovery(RELOADED)
            broker.start()
            wait_until(lambda: out.state == LinkState.CONNECTED, what="connected again")
        finally:
            out.stop()
        now = retained(broker)
    assert set(now) == topics_of("entities", RELOADED)
    assert json.loads(now[entity("people", "sensor")])["expire_after"] == 3 * 60


def test_a_reload_takes_the_rules_and_the_window_and_keeps_the_restart_only_settings(tmp_path: Path) -> None:
    """mqtt.* (prefix, base topic, expire_after_windows, mode) takes effect at the next start."""
    cfg = MqttConfig(host="127.0.0.1", port=1, discovery=DiscoveryConfig(mode="entities"))
    out = MqttOutput(cfg, device_id=DEVICE, state_dir=tmp_path, spool_days=1, clock=SystemClock(),
                     discovery=TWO)
    try:
        out.update_discovery(DiscoverySpec("other", "elsewhere/x", prefix="ha", window_seconds=60,
                                           expire_after_windows=9, alert_rules=("fresh",)))
        assert out.discovery == DiscoverySpec(DEVICE, BASE, window_seconds=60, alert_rules=("fresh",),
                                              mode="entities")
    finally:
        out.stop(timeout=0.1)


class _SlowSink(logging.Handler):
    """A log sink that takes its time: a console on a serial line, a stalled journald."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.5)


@pytest.mark.slow
def test_stopping_just_after_connecting_delivers_everything_queued_even_when_logging_is_slow(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection was shown as up before `stop` could know it, so `stop` skipped `offline`
    and cut the queued discovery (CI: the first run's configs survived a removed rule)."""
    caplog.set_level(logging.INFO, logger="agent.transport.mqtt")
    sink = _SlowSink()
    logging.getLogger("agent.transport.mqtt").addHandler(sink)
    try:
        run_once(broker, tmp_path / "state", "entities")
    finally:
        logging.getLogger("agent.transport.mqtt").removeHandler(sink)
    assert set(retained(broker)) == topics_of("entities")
