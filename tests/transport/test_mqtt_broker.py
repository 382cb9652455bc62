"""MqttOutput against a real mosquitto with TLS, client certificates, passwords and ACLs."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import SystemClock
from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk, signing_input
from agent.outputs.base import Message
from agent.transport.commands import Command
from agent.transport.discovery import DiscoverySpec
from agent.transport.link import LinkState
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig, TlsConfig
from agent.transport.spool_types import DropReport
from tests.mosquitto import ACL_PER_DEVICE, Broker, Pki, Subscriber, make_pki, wait_until

DEVICE = "lobby-1"
BASE = f"emotion-agent/{DEVICE}"
PASSWORD = "lobby-secret"
DASH = {"username": "dashboard", "password": "dash-secret"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory.mktemp("pki"),
        clients=("lobby-1", "dashboard"),
        expired=("lobby-1",),
        foreign=("lobby-1",),
    )


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    users = {DEVICE: PASSWORD, "dashboard": DASH["password"]}
    with Broker(tmp_path / "broker", pki=pki, users=users, acl=ACL_PER_DEVICE, persistence=True) as b:
        yield b


def settings(broker: Broker, tmp_path: Path, *, cert: str = DEVICE, **over: Any) -> MqttConfig:
    assert broker.pki is not None
    pw = tmp_path / "mqtt.password"
    pw.write_text(over.pop("password", PASSWORD) + "\n")
    pw.chmod(0o600)
    crt, key = broker.pki.clients[cert]
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "tls": TlsConfig(ca=over.pop("ca", broker.pki.ca), cert=crt, key=key),
        "username": DEVICE,
        "password_file": pw,
        "reconnect_min_seconds": 1,
        "reconnect_max_seconds": 1,
        "keepalive_seconds": 5,
    }
    values.update(over)
    return MqttConfig(**values)


def output(cfg: MqttConfig, state: Path, **kw: Any) -> MqttOutput:
    return MqttOutput(cfg, device_id=DEVICE, state_dir=state, spool_days=7, clock=SystemClock(), **kw)


def dashboard(broker: Broker, topics: list[str], **kw: Any) -> Subscriber:
    assert broker.pki is not None
    return Subscriber(broker, topics, cert=broker.pki.clients["dashboard"], **DASH, **kw)


def signed(signer: Signer, i: int) -> bytes:
    return encode(signer.sign("stats", f"{BASE}/stats", {"people": 5 + i, "window": i}))


def verify(raw: bytes, key: Ed25519PrivateKey, topic: str) -> dict[str, Any]:
    env: dict[str, Any] = json.loads(raw)
    sig = base64.urlsafe_b64decode(env["sig"] + "=" * (-len(env["sig"]) % 4))
    key.public_key().verify(sig, signing_input(env))  # raises InvalidSignature
    assert env["topic"] == topic
    return env


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.mark.slow
def test_signed_windows_arrive_in_order_with_availability_discovery_and_key(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    signer = Signer(DEVICE, key, store=MemorySequenceStore(), clock=SystemClock())
    spec = DiscoverySpec(DEVICE, BASE, alert_rules=("stress",))
    with dashboard(broker, [f"{BASE}/#", "homeassistant/device/#"]) as sub:
        out = output(settings(broker, tmp_path), tmp_path / "state", discovery=spec,
                     public_key=public_jwk(key.public_key()))
        out.start()
        for i in range(5):
            out.send(Message(f"{out.base_topic}/stats", signed(signer, i)))
        got = sub.wait_for(f"{BASE}/stats", 5)
        envs = [verify(m.payload, key, f"{BASE}/stats") for m in got]
        assert [e["seq"] for e in envs] == sorted(e["seq"] for e in envs)
        assert [e["body"]["window"] for e in envs] == [0, 1, 2, 3, 4]
        assert sub.wait_for(f"{BASE}/status")[0].payload == b"online"
        (config,) = sub.wait_for(spec.topic)
        disco = json.loads(config.payload)
        assert {"dev", "o", "cmps"} <= set(disco)
        assert disco["cmps"]["alert_stress"]["p"] == "binary_sensor"
        assert disco["dev"]["sn"] == signer.kid, "the key id is the device's serial number in HA"
        wait_until(lambda: out.health().backlog == 0, what="spool drained")
        out.stop()
        statuses = [m.payload for m in sub.wait_for(f"{BASE}/status", 2)]
        assert statuses == [b"online", b"offline"]
    assert sub.on_topic(f"{BASE}/key") == [], "the signed key message is the service's, never a bare JWK"
    assert "Client emotion-agent-lobby-1 disconnected." in broker.log_text()
    assert "closed its connection" not in broker.log_text()  # clean stop, so no will was sent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "over", "expect"),
    [
        ("wrong password", {"password": "guess"},
         (LinkState.REFUSED, "refused the connection: Not authorized", "check mqtt.username")),
        ("wrong CA", {"ca": "other"},
         (LinkState.FAILED, "certificate verify failed", "not signed by mqtt.tls.ca")),
        ("expired client cert", {"cert": "expired-lobby-1"},
         (LinkState.FAILED, "alert certificate expired", "client certificate mqtt.tls.cert: it has expired")),
        ("client cert from another CA", {"cert": "foreign-lobby-1"},
         (LinkState.FAILED, "alert unknown ca", "not signed by a CA the broker trusts")),
    ],
)
def test_a_refused_connection_is_reported_retried_and_never_treated_as_connected(
    broker: Broker, tmp_path: Path, case: str, over: dict[str, Any], expect: tuple[LinkState, str, str]
) -> None:
    """The health message says what failed and what to check; paho keeps retrying."""
    state, reason, hint = expect
    assert broker.pki is not None
    if over.get("ca") == "other":
        over["ca"] = broker.pki.other_ca
    out = output(settings(broker, tmp_path, **over), tmp_path / "state")
    out.start()
    try:
        out.send(Message(f"{out.base_topic}/stats", b"must stay spooled"))
        wait_until(lambda: out.health().failures >= 2, 20, f"{case}: retries")
        health = out.health()
        assert health.connects == 0
        assert health.state == state.value
        assert health.last_error is not None
        assert reason in health.last_error, health.last_error
        assert hint in health.last_error, health.last_error
        assert health.backlog == 1
    finally:
        out.stop()


@pytest.mark.slow
def test_an_anonymous_client_is_refused_by_the_acl_protected_broker(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = settings(broker, tmp_path).model_copy(update={"username": None, "password_file": None})
    out = output(cfg, tmp_path / "state")
    out.start()
    try:
        wait_until(lambda: out.health().failures >= 2, 20, "two refusals")
        assert out.health().state == "refused"
        assert "not authorized" in (out.health().last_error or "").lower()
        assert out.health().connects == 0
    finally:
        out.stop()


@pytest.mark.slow
def test_a_broker_outage_loses_nothing_and_sends_the_backlog_in_order_once(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The agent hands each window to the broker exactly once (the broker's log shows it).

    A subscriber with a persistent session may still get one message twice (DUP) when the broker
    stops before it recorded the subscriber's PUBACK: that is QoS 1 between broker and subscriber,
    so receivers drop repeats by (kid, boot, seq), as the verifier does.
    """
    signer = Signer(DEVICE, key, store=MemorySequenceStore(), clock=SystemClock())
    with dashboard(broker, [f"{BASE}/stats"], persistent=True, client_id="dash-outage") as sub:
        out = output(settings(broker, tmp_path), tmp_path / "state")
        out.start()
        try:
            for i in range(3):
                out.send(Message(f"{out.base_topic}/stats", signed(signer, i)))
            sub.wait_for(f"{BASE}/stats", 3)
            wait_until(lambda: out.health().backlog == 0, what="first three acknowledged")
            broker.stop()
            wait_until(lambda: out.state != LinkState.CONNECTED, what="agent sees the outage")
            for i in range(3, 10):
                out.send(Message(f"{out.base_topic}/stats", signed(signer, i)))
            assert out.health().backlog == 7
            broker.start()
            # Wait for the last window, not for 10 messages: one may be a broker redelivery.
            wait_until(lambda: any(b'"window":9' in m.payload for m in sub.on_topic(f"{BASE}/stats")),
                       30, "the last window")
            got = sub.on_topic(f"{BASE}/stats")
            wait_until(lambda: out.health().backlog == 0, what="backlog drained")
        finally:
            out.stop()
    envs = [verify(m.payload, key, f"{BASE}/stats") for m in got]
    seqs = [e["seq"] for e in envs]
    assert seqs == sorted(seqs), "arrival order is the signing order"
    unique = {(e["kid"], e["boot"], e["seq"]): e for e in envs}
    assert [e["body"]["window"] for e in unique.values()] == list(range(10))
    seen: set[int] = set()
    for message, env in zip(got, envs, strict=True):
        assert env["seq"] not in seen or message.dup, "a repeat can only be the broker's redelivery"
        seen.add(env["seq"])
    log = broker.log_text().splitlines()
    from_agent = [ln for ln in log if "Received PUBLISH from emotion-agent-lobby-1" in ln and "/stats'" in ln]
    assert len(from_agent) == 10, from_agent


@pytest.mark.slow
def test_rows_the_broker_acknowledges_while_stop_waits_for_offline_leave_the_spool(
    broker: Broker, tmp_path: Path
) -> None:
    """stop() gives up draining, ends the sender thread, then waits for ``offline``: PUBACKs that
    arrive in that wait delete their rows too, so the next run does not publish them again."""
    with dashboard(broker, [f"{BASE}/stats"]) as sub:
        out = output(settings(broker, tmp_path), tmp_path / "state")
        out.start()
        wait_until(lambda: out.state == LinkState.CONNECTED, what="connected")
        broker.pause()  # a broker slow to answer: the drain gives up with the rows in flight
        try:
            for i in range(5):
                out.send(Message(f"{out.base_topic}/stats", b'{"window": %d}' % i))
            stopping = threading.Thread(target=out.stop, kwargs={"timeout": 3.0})
            stopping.start()
            wait_until(lambda: not out._sender.running, what="the sender thread ended")
        finally:
            broker.resume()  # the broker answers while stop waits for `offline`
        stopping.join(15)
        assert not stopping.is_alive()
        got = sub.wait_for(f"{BASE}/stats", 5)
    assert [json.loads(m.payload)["window"] for m in got] == list(range(5))
    assert out.health().backlog == 0, "rows the broker acknowledged are still spooled"
    with sqlite3.connect(tmp_path / "state" / "spool.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0


@pytest.mark.slow
def test_stop_ends_within_its_timeout_when_a_hung_broker_leaves_no_room_for_the_disconnect(
    broker: Broker, tmp_path: Path
) -> None:
    """A broker that stops reading with the connection's buffers full: paho can write neither
    ``offline`` nor its DISCONNECT, and its ``loop_stop`` waited for the keep-alive to give up
    (60 s here; the unit's TimeoutStopSec= is 20 s). ``stop(timeout)`` now ends within its
    timeout and a short grace, and what the broker never acknowledged stays spooled for the next
    start."""
    out = output(settings(broker, tmp_path, keepalive_seconds=60), tmp_path / "state")
    out.start()
    stopping = threading.Thread(target=out.stop, kwargs={"timeout": 2.0}, daemon=True)
    try:
        wait_until(lambda: out.state == LinkState.CONNECTED, what="connected")
        broker.pause()
        big = b"x" * 400_000  # 20 in flight: more than the kernel buffers both ends (about 4 MB)
        for i in range(20):
            out.send(Message(f"{out.base_topic}/stats", b'{"window": %d}' % i + big))
        time.sleep(1.0)  # paho writes until the buffers are full
        began = time.monotonic()
        stopping.start()
        stopping.join(30)
        took = time.monotonic() - began
    finally:
        broker.resume()  # a stop still stuck in paho ends once the broker reads again
        stopping.join(90)
    assert took < 2.0 + 3.0, f"stop(timeout=2) took {took:.1f} s"
    with sqlite3.connect(tmp_path / "state" / "spool.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 20, "unacknowledged rows stay"


class SlowLog(logging.Handler):
    """A handler that takes a while, as a write to a busy journald or a full pipe does."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.05)


class PauseAtFirstConnect(logging.Handler):
    """Pauses the broker from inside the agent's first ``on_connect`` (its last line, "MQTT
    connected"): what that connect queued reaches a broker that never reads it."""

    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker
        self.paused = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "MQTT connected" and not self.paused.is_set():
            self.broker.pause()
            self.paused.set()


@contextlib.contextmanager
def mqtt_log(handler: logging.Handler) -> Iterator[None]:
    """The service's default level (INFO) on the transport's logger, with ``handler`` on it."""
    log = logging.getLogger("agent.transport.mqtt")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def received_from_agent(text: str, client_id: str) -> list[tuple[str, int, bool]]:
    """(topic, payload bytes, retain) of each PUBLISH the broker's log shows from the agent."""
    line = re.compile(
        rf"Received PUBLISH from {re.escape(client_id)} \(d\d, q\d, r(\d), m\d+, '([^']*)', "
        rf"\.\.\. \((\d+) bytes\)\)"
    )
    return [(m.group(2), int(m.group(3)), m.group(1) == "1") for m in line.finditer(text)]


@pytest.mark.slow
def test_after_a_reconnect_the_row_that_was_in_flight_reaches_the_broker_before_newer_ones(
    broker: Broker, tmp_path: Path
) -> None:
    """A row in flight when the broker dies goes out again before the rows spooled during the
    outage, though the sender is woken while ``on_connect`` still runs (a slow log write keeps it
    there): receivers reject a seq that is not newer than the last (docs/signed-messages.md)."""
    windows = [b'{"seq": 1}', b'{"seq": 22}', b'{"seq": 333}', b'{"seq": 4444}']  # told by size
    out = output(settings(broker, tmp_path), tmp_path / "state")
    with mqtt_log(SlowLog()):
        out.start()
        try:
            wait_until(lambda: out.state == LinkState.CONNECTED, what="connected")
            broker.pause()
            out.send(Message(f"{out.base_topic}/stats", windows[0]))
            wait_until(lambda: len(out._sender._inflight) == 1, what="the first row handed to paho")
            broker.kill()  # it dies with the row unacknowledged
            wait_until(lambda: out.state != LinkState.CONNECTED, what="the outage seen")
            for payload in windows[1:]:
                out.send(Message(f"{out.base_topic}/stats", payload))
            mark = len(broker.log_text())
            broker.start()
            wait_until(lambda: out.health().backlog == 0, 15, "backlog drained")
            text = broker.log_text()[mark:]
        finally:
            out.stop()
    stats = [size for topic, size, _ in received_from_agent(text, out.client_id) if topic.endswith("/stats")]
    assert stats == [len(w) for w in windows], "each window once, in signing order"


@pytest.mark.slow
def test_the_first_connects_clears_and_retractions_cut_off_by_an_outage_go_out_first_after_it(
    broker: Broker, tmp_path: Path
) -> None:
    """The retained clears of the first connect (privacy_mode, alert/<rule>) and the retraction
    of discovery the last run announced are sent by that connect only. Cut off before the broker
    read them, they are published again at the reconnect, first and in their order, so the old
    states and the old discovery do not come back with the broker."""
    state = tmp_path / "state"
    spec = DiscoverySpec(DEVICE, BASE, alert_rules=("tension",))
    stale = {f"{BASE}/privacy_mode": b'{"state": "ON"}', f"{BASE}/alert/tension": b'{"state": "raised"}'}
    previous = output(settings(broker, tmp_path), state, discovery=spec)  # device-mode discovery
    previous.start()
    try:
        for topic, payload in stale.items():
            previous.send(Message(topic, payload, retain=True))
        wait_until(lambda: previous.health().backlog == 0, what="the last run's states retained")
    finally:
        previous.stop()
    broker.stop()  # saves the retained messages (persistence)
    broker.start()
    cleared = [*stale, spec.topic]  # the privacy and alert states, then the device-mode discovery
    cfg = settings(broker, tmp_path, discovery={"mode": "entities"})
    out = output(cfg, state, discovery=spec)
    pause = PauseAtFirstConnect(broker)
    with mqtt_log(pause):
        out.start()
        try:
            assert pause.paused.wait(15), "no first connect"
            broker.kill()  # the first connect's messages die unread; the retained states stay
            mark = len(broker.log_text())
            broker.start()
            wait_until(lambda: out.health().connects == 2, 15, "reconnected")
            # A row goes out after all the connect queued: its PUBACK means the broker read them.
            out.send(Message(f"{out.base_topic}/stats", b'{"window": 1}'))
            wait_until(lambda: out.health().backlog == 0, 15, "the row after the reconnect sent")
            with dashboard(broker, [*cleared, f"{BASE}/status"], client_id="after-outage") as late:
                late.wait_for(f"{BASE}/status")  # retained ones come in the order of the filters
            text = broker.log_text()[mark:]
        finally:
            out.stop()
    assert [(m.topic, m.payload) for m in late.messages] == [(f"{BASE}/status", b"online")]
    # What the first connect queued, in its order, ahead of the second connect's `online`.
    first = [(t, 0, True) for t in stale] + [(f"{BASE}/status", 6, True), (spec.topic, 0, True)]
    assert received_from_agent(text, out.client_id)[: len(first)] == first


AGENT = """
import sys, time
from pathlib import Path
from agent.clock import SystemClock
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
cfg = MqttConfig.model_validate_json(Path(sys.argv[1]).read_text())
out = MqttOutput(cfg, device_id="lobby-1", state_dir=Path(sys.argv[2]), spool_days=7, clock=SystemClock())
out.start()
for i in range(6):
    out.send(Message(f"{out.base_topic}/stats", b'{"window": %d}' % i))
print("spooled", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_an_agent_killed_9_while_the_broker_is_down_delivers_its_backlog_after_restart(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = settings(broker, tmp_path)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    broker.stop()
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path / "cfg.json"), str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spooled"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    broker.start()
    with dashboard(broker, [f"{BASE}/stats"]) as sub:
        out = output(cfg, tmp_path / "state")
        out.start()
        try:
            got = sub.wait_for(f"{BASE}/stats", 6, timeout=30)
            wait_until(lambda: out.health().backlog == 0, what="backlog drained")
        finally:
            out.stop()
    assert [json.loads(m.payload)["window"] for m in got] == list(range(6))


@pytest.mark.slow
def test_malformed_commands_never_crash_or_change_state_and_valid_ones_arrive(
    broker: Broker, tmp_path: Path
) -> None:
    received: list[Command] = []
    out = output(settings(broker, tmp_path), tmp_path / "state", on_command=received.append)
    with dashboard(broker, [f"{BASE}/status"], client_id="commander") as cmd:
        # A retained command left on the broker is replayed at subscription: refused.
        cmd.client.publish(f"{BASE}/cmd/privacy_mode/set", b"ON", qos=1, retain=True).wait_for_publish(5)
        out.start()
        try:
            wait_until(lambda: out.health().commands_rejected == 1, what="retained replay refused")
            cmd.client.publish(f"{BASE}/cmd/privacy_mode/set", b"", qos=1, retain=True).wait_for_publish(5)
            bad = [
                ("privacy_mode/set", bytes(range(256))),
                ("privacy_mode/set", b'{"state": "ON"'),
                ("privacy_mode/set", b"ON" * 1000),
                ("privacy_mode/set", b"\xff" * 100_000),
                ("checkpoint", b"{}"),
                ("reboot", b"now"),
            ]
            for suffix, payload in bad:
                cmd.client.publish(f"{BASE}/cmd/{suffix}", payload, qos=1).wait_for_publish(5)
            wait_until(lambda: out.health().commands_rejected >= 5, what="rejections counted")
            assert received == []
            cmd.client.publish(f"{BASE}/cmd/privacy_mode/set", b"ON", qos=1).wait_for_publish(5)
            cmd.client.publish(f"{BASE}/cmd/checkpoint", b"PRESS", qos=1).wait_for_publish(5)
            wait_until(lambda: len(received) == 2, what="valid commands")
            health = out.health()
        finally:
            out.stop()
    assert received == [Command("privacy_mode", on=True), Command("checkpoint")]
    assert health.state == "connected"
    assert health.commands_accepted == 2
    # The retained replay (1, plus the empty retained clear: 2) and 4 bad payloads reach the
    # agent; the 100 kB one is stopped by the broker (our MQTT 5 maximum packet size) and the
    # unknown command topic is never subscribed.
    assert health.commands_rejected == 6


@pytest.mark.slow
def test_discovery_is_sent_again_when_home_assistant_comes_online(broker: Broker, tmp_path: Path) -> None:
    spec = DiscoverySpec(DEVICE, BASE)
    out = output(settings(broker, tmp_path), tmp_path / "state", discovery=spec, jitter=lambda: 0.0)
    with dashboard(broker, [spec.topic]) as sub:
        out.start()
        try:
            sub.wait_for(spec.topic, 1)
            sub.client.publish("homeassistant/status", b"offline", qos=1).wait_for_publish(5)
            sub.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
            configs = sub.wait_for(spec.topic, 2)
        finally:
            out.stop()
    assert configs[0].payload == configs[1].payload
    assert len(sub.on_topic(spec.topic)) == 2


@pytest.mark.slow
def test_a_message_the_acl_forbids_is_dropped_reported_and_does_not_block_the_rest(
    broker: Broker, tmp_path: Path
) -> None:
    drops: list[DropReport] = []
    out = output(settings(broker, tmp_path), tmp_path / "state", on_drop=drops.append)
    with dashboard(broker, ["emotion-agent/#"]) as sub:
        out.start()
        try:
            out.send(Message("emotion-agent/other-device/stats", b"not ours"))
            out.send(Message(f"{out.base_topic}/stats", b"ours"))
            sub.wait_for(f"{BASE}/stats")
            wait_until(lambda: out.health().backlog == 0, what="spool emptied")
        finally:
            out.stop()
    assert sub.on_topic("emotion-agent/other-device/stats") == []
    # A row for another device's topic never reaches the broker: quarantined by the agent.
    assert [(d.reason, d.count, d.topics) for d in drops] == [
        ("quarantined", 1, {"emotion-agent/other-device/stats": 1})
    ]
    assert out.health().to_body()["spool_dropped"] == 1


@pytest.mark.slow
def test_a_message_the_broker_refuses_is_dropped_reported_and_does_not_block_the_rest(
    broker: Broker, tmp_path: Path
) -> None:
    """A base topic the ACL does not grant (a misconfigured device): PUBACK says not authorized."""
    drops: list[DropReport] = []
    cfg = settings(broker, tmp_path, base_topic="emotion-agent/other-device")
    out = output(cfg, tmp_path / "state", on_drop=drops.append)
    with dashboard(broker, ["emotion-agent/#"]) as sub:
        out.start()
        try:
            out.send(Message(f"{out.base_topic}/stats", b"refused"))
            wait_until(lambda: out.health().backlog == 0, what="spool emptied")
        finally:
            out.stop()
    assert sub.on_topic("emotion-agent/other-device/stats") == []
    assert [(d.reason, d.count) for d in drops] == [("refused_by_broker", 1)]


CONNECTED_AGENT = """
import sys, time
from pathlib import Path
from agent.clock import SystemClock
from agent.transport.link import LinkState
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
cfg = MqttConfig.model_validate_json(Path(sys.argv[1]).read_text())
out = MqttOutput(cfg, device_id="lobby-1", state_dir=Path(sys.argv[2]), spool_days=7, clock=SystemClock())
out.start()
while out.state != LinkState.CONNECTED:
    time.sleep(0.05)
print("connected", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_broker_publishes_the_retained_offline_will_when_the_agent_dies(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = settings(broker, tmp_path)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    with dashboard(broker, [f"{BASE}/status"]) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-c", CONNECTED_AGENT, str(tmp_path / "cfg.json"), str(tmp_path / "state")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "connected"
        sub.wait_for(f"{BASE}/status", 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        statuses = [m.payload for m in sub.wait_for(f"{BASE}/status", 2, timeout=15)]
    assert statuses == [b"online", b"offline"]
    with dashboard(broker, [f"{BASE}/status"], client_id="late-reader") as late:
        (retained,) = late.wait_for(f"{BASE}/status")
    assert (retained.payload, retained.retain) == (b"offline", True)


@pytest.mark.slow
def test_a_privacy_state_retained_by_a_previous_run_is_cleared_and_the_new_one_kept(
    broker: Broker, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    signer = Signer(DEVICE, key, store=MemorySequenceStore(), clock=SystemClock())
    topic = f"{BASE}/privacy_mode"
    stale = encode(signer.sign("privacy-mode", topic, {"state": "ON"}))
    with dashboard(broker, [topic], client_id="old-run") as old:
        old.client.publish(topic, stale, qos=1, retain=True).wait_for_publish(5)
    out = output(settings(broker, tmp_path), tmp_path / "state")
    out.start()
    try:
        wait_until(lambda: out.state == LinkState.CONNECTED, what="connected")
        cleared = re.compile(
            rf"Received PUBLISH from {out.client_id} \(d0, q1, r1, m\d+, '{topic}', \.\.\. \(0 bytes\)\)"
        )
        wait_until(lambda: cleared.search(broker.log_text()) is not None, what="stale state cleared")
        # Retained messages come in the order of the filters: once status is here, a retained
        # privacy state would have been delivered before it.
        with dashboard(broker, [topic, f"{BASE}/status"], client_id="after-clear") as late:
            late.wait_for(f"{BASE}/status")
        assert late.on_topic(topic) == [], "no retained privacy state right after start"
        fresh = encode(signer.sign("privacy-mode", topic, {"state": "OFF"}))
        out.send(Message(f"{out.base_topic}/privacy_mode", fresh, retain=True))
        wait_until(lambda: out.health().backlog == 0, what="fresh state sent")
        with dashboard(broker, [topic], client_id="reader") as reader:
            (retained,) = reader.wait_for(topic)
    finally:
        out.stop()
    assert (retained.payload, retained.retain) == (fresh, True)


BURST_AGENT = """
import sys, time
from pathlib import Path
from agent.clock import SystemClock
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
cfg = MqttConfig.model_validate_json(Path(sys.argv[1]).read_text())
out = MqttOutput(cfg, device_id="lobby-1", state_dir=Path(sys.argv[2]), spool_days=7, clock=SystemClock())
for i in range(500):
    out.send(Message(f"{out.base_topic}/stats", b'{"window": %d}' % i))
out.start()
while out.health().backlog == 500:
    time.sleep(0.001)
print("sending", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_an_agent_killed_9_mid_send_loses_nothing_and_repeats_are_only_resends(
    broker: Broker, tmp_path: Path
) -> None:
    """Killed while messages are in flight: the next run sends every unacknowledged row again.

    Nothing is lost; a window the broker had already taken may come twice (the receiver keeps the
    first, by seq), and the first arrivals are in window order.
    """
    cfg = settings(broker, tmp_path)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    with dashboard(broker, [f"{BASE}/stats"]) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-c", BURST_AGENT, str(tmp_path / "cfg.json"), str(tmp_path / "state")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "sending"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        before = len(sub.on_topic(f"{BASE}/stats"))
        out = output(cfg, tmp_path / "state")
        out.start()
        try:
            wait_until(lambda: out.health().backlog == 0, 30, "backlog drained by the next run")
            wait_until(lambda: len({m.payload for m in sub.on_topic(f"{BASE}/stats")}) == 500,
                       10, "all 500 windows")
        finally:
            out.stop()
    windows = [json.loads(m.payload)["window"] for m in sub.on_topic(f"{BASE}/stats")]
    first_seen = list(dict.fromkeys(windows))
    assert first_seen == list(range(500))
    assert before < 500, "the kill came before everything was delivered (else the test proves nothing)"
