"""Wiring without a broker: config to MqttOutput, and the sender's own retention timer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import FakeClock
from agent.config import parse_config
from agent.errors import ConfigError, TransportError
from agent.outputs.base import Message
from agent.transport.link import LinkState
from agent.transport.mqtt import MqttOutput
from agent.transport.sender import SpoolSender
from agent.transport.spool import Spool
from agent.transport.spool_types import DropReport
from tests.mosquitto import wait_until


def test_from_config_takes_topics_retention_and_alert_rules_from_the_agent_config(tmp_path: Path) -> None:
    cfg = parse_config(f"""
device_id: lobby-7
site: {{jurisdiction: US, context: retail, purpose: analytics}}
analytics:
  window_seconds: 30
  alerts:
    - {{name: crowd, metric: people, threshold: 8}}
mqtt: {{host: 127.0.0.1, port: 1883, base_topic: shop/lobby-7, expire_after_windows: 4}}
retention: {{spool_days: 2}}
state_dir: "{tmp_path}"
""")
    out = MqttOutput.from_config(cfg, FakeClock())
    assert out.base_topic == "shop/lobby-7"
    assert out.status_topic == "shop/lobby-7/status"
    assert out.client_id == "emotion-agent-lobby-7"
    spec = out.discovery
    assert spec is not None
    assert (spec.alert_rules, spec.window_seconds, spec.expire_after_windows) == (("crowd",), 30, 4)
    out.send(Message(f"{out.base_topic}/stats", b"{}"))
    assert (tmp_path / "spool.sqlite3").exists()
    assert out.health().backlog == 1
    assert out.health().state == "stopped"
    out.stop()
    assert out.health().backlog == 1, "figures stay readable after stop; the row waits for the next run"


def test_discovery_off_announces_nothing(tmp_path: Path) -> None:
    cfg = parse_config(f"""
device_id: lobby-7
site: {{jurisdiction: US, context: retail, purpose: analytics}}
mqtt: {{discovery: false}}
state_dir: "{tmp_path}"
""")
    out = MqttOutput.from_config(cfg, FakeClock())
    assert out.discovery is None
    out.stop()


@pytest.mark.parametrize("bad", ["", "/stats", "stats/#", "a/+/b"])
def test_a_bad_topic_suffix_is_refused(tmp_path: Path, bad: str) -> None:
    cfg = parse_config(f'device_id: a\nsite: {{jurisdiction: US}}\nstate_dir: "{tmp_path}"\n')
    out = MqttOutput.from_config(cfg, FakeClock())
    with pytest.raises(ValueError, match="must be a plain relative topic"):
        out.send(Message(f"{out.base_topic}/{bad}", b"x"))
    assert out.health().backlog == 0
    out.stop()


def test_the_sender_applies_retention_while_nothing_new_is_spooled(tmp_path: Path) -> None:
    clock = FakeClock()
    drops: list[DropReport] = []
    spool = Spool(tmp_path / "s.sqlite3", clock, max_bytes=10**6, max_age_seconds=3600, on_drop=drops.append)
    spool.put("t/stats", b"old")
    clock.advance(3601)
    sender = SpoolSender(spool, 10, threading.Event(), lambda: None, retention_every_s=0.0)
    sender.start()
    try:
        wait_until(lambda: spool.stats().backlog == 0, 5, "retention by the sender")
    finally:
        sender.stop(5)
    assert [(d.reason, d.count) for d in drops] == [("retention", 1)]


@pytest.mark.parametrize(
    ("yaml", "mode"),
    [("{discovery: {mode: entities}}", "entities"), ("{discovery: true}", "device"), ("{}", "device"),
     ("{discovery: {mode: 'off'}}", None)],
)
def test_the_discovery_mode_comes_from_the_config_and_the_old_flag_still_works(
    tmp_path: Path, yaml: str, mode: str | None
) -> None:
    cfg = parse_config(f"""
device_id: lobby-7
site: {{jurisdiction: US, context: retail, purpose: analytics}}
mqtt: {yaml}
state_dir: "{tmp_path}"
""")
    out = MqttOutput.from_config(cfg, FakeClock())
    assert (out.discovery.mode if out.discovery is not None else None) == mode
    out.stop()


def test_an_unknown_discovery_mode_is_refused_with_its_key_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"""
device_id: lobby-7
site: {{jurisdiction: US, context: retail, purpose: analytics}}
mqtt: {{discovery: {{mode: classic}}}}
state_dir: "{tmp_path}"
""")
    assert "mqtt.discovery.mode" in str(err.value)
    assert "'device', 'entities' or 'off'" in str(err.value)


class RecordingClient:
    """Stands in for paho: records each publish and hands out message ids; nothing is acknowledged."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> SimpleNamespace:
        mid = len(self.published) + 1
        self.published.append((mid, topic, payload))
        return SimpleNamespace(mid=mid, rc=MQTTErrorCode.MQTT_ERR_SUCCESS)

    def drop_out_messages(self) -> list[object]:
        return []  # what paho held is taken back: the sender must send it again itself


def test_a_removed_rules_clear_taken_back_by_a_reconnect_is_sent_again(tmp_path: Path) -> None:
    """A reconnect takes every unacknowledged message back from paho; the sender sends its rows
    again, and must send a removed alert rule's clear again too, or the old state stays retained."""
    spool = Spool(tmp_path / "s.sqlite3", FakeClock(), max_bytes=10**6, max_age_seconds=3600)
    connected = threading.Event()
    connected.set()
    client = RecordingClient()
    sender = SpoolSender(spool, 10, connected, lambda: cast(Any, client))
    sender.start()
    try:
        sender.clear_after(0, ["emotion-agent/lobby-1/alert/old"])
        wait_until(lambda: len(client.published) == 1, 5, "the clear")
        sender.reconnected(cast(Any, client))
        wait_until(lambda: len(client.published) == 2, 5, "the clear sent again after the reconnect")
        sender.acked(2, None)
        time.sleep(0.3)
    finally:
        sender.stop(5)
    assert [(topic, payload) for _, topic, payload in client.published] == [
        ("emotion-agent/lobby-1/alert/old", b""),
        ("emotion-agent/lobby-1/alert/old", b""),
    ]


class StalledSpool(Spool):
    """A spool whose first acknowledgement waits for ``go``, as a write to a busy SD card does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, FakeClock(), max_bytes=10**6, max_age_seconds=3600)
        self.stalled, self.go = threading.Event(), threading.Event()

    def ack(self, item_id: int) -> bool:
        if not self.stalled.is_set():
            self.stalled.set()
            self.go.wait(10)
        return super().ack(item_id)


def test_a_sender_thread_that_outlives_its_stop_leaves_the_rows_spooled_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop's budget ran out while the sender thread was in a slow spool write, and the output
    closed the spool under it (``MqttOutput.stop`` with nothing left of the service's budget). Was:
    the thread's last pass over the broker's answers (a refusal queued meanwhile) hit the closed
    database and the thread died with a traceback (``Exception in thread mqtt-sender``). Now it
    says the rows stay spooled; the next start sends them again."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    spool = StalledSpool(tmp_path / "s.sqlite3")
    connected = threading.Event()
    connected.set()
    client = RecordingClient()
    sender = SpoolSender(spool, 10, connected, lambda: cast(Any, client))
    rows = [spool.put("emotion-agent/lobby-1/stats", b"%d" % i) for i in range(2)]
    sender.start()
    wait_until(lambda: len(client.published) == 2, 5, "both rows handed to paho")
    sender.acked(1, None)
    assert spool.stalled.wait(5)
    sender.acked(2, ReasonCode(PacketTypes.PUBACK, "Not authorized"))
    thread = next(t for t in threading.enumerate() if t.name == "mqtt-sender")
    sender.stop(0.0)
    spool.close()
    spool.go.set()
    thread.join(5)
    assert raised == []
    again = Spool(tmp_path / "s.sqlite3", FakeClock(), max_bytes=10**6, max_age_seconds=3600)
    assert [item.id for item in again.pending()] == rows, "both rows go out again at the next start"
    again.close()


class _EndsBadly:
    """Stands in for paho at stop: ending its network thread fails."""

    def end_within(self, seconds: float) -> bool:
        raise OSError("loop_stop failed")


def _sender_stop_fails(out: MqttOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(timeout: float) -> None:
        raise RuntimeError("sender thread would not join")

    monkeypatch.setattr(out._sender, "stop", fail)


def _offline_fails(out: MqttOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError("offline not published")

    out._client = cast(Any, _EndsBadly())
    out._connected.set()
    monkeypatch.setattr(out._own, "say_offline", fail)


def _end_within_fails(out: MqttOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    out._client = cast(Any, _EndsBadly())


def _drain_fails(out: MqttOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(timeout: float) -> None:
        raise OSError("drain failed")

    monkeypatch.setattr(out, "_drain", fail)
    out._sender.start()


@pytest.mark.parametrize(
    ("breaks", "error"),
    [(_sender_stop_fails, "sender thread would not join"), (_offline_fails, "offline not published"),
     (_end_within_fails, "loop_stop failed"), (_drain_fails, "drain failed")],
)
def test_stop_closes_the_spool_and_says_stopped_even_when_a_step_before_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaks: Any, error: str
) -> None:
    """The error reaches the caller, and the spool is closed all the same: left open, it kept its
    file open and could report a drop to the audit log the service closes after the output."""
    cfg = parse_config(f'device_id: a\nsite: {{jurisdiction: US}}\nstate_dir: "{tmp_path}"\n')
    out = MqttOutput.from_config(cfg, FakeClock())
    out.send(Message(f"{out.base_topic}/stats", b"{}"))
    out._status.set(LinkState.CONNECTING, None)
    breaks(out, monkeypatch)
    with pytest.raises((RuntimeError, OSError), match=error):
        out.stop(0.2)
    assert out.health().state == "stopped"
    assert not out._sender.running, "the sender thread is not left running on the closed spool"
    assert out.health().backlog == 1, "the row stays spooled for the next run"
    with pytest.raises(TransportError, match="closed database"):
        out.send(Message(f"{out.base_topic}/stats", b"{}"))
