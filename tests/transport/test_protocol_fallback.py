"""MQTT 5 first; a broker that only speaks 3.1.1 gets 3.1.1 (protocol: auto)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.transport.link import LinkState
from agent.transport.mqtt import MqttOutput
from agent.transport.settings import MqttConfig
from tests.mosquitto import wait_until
from tests.transport.fake_broker import Mqtt311OnlyBroker


def make(port: int, tmp_path: Path, protocol: str) -> MqttOutput:
    cfg = MqttConfig(host="127.0.0.1", port=port, protocol=protocol,  # type: ignore[arg-type]
                     reconnect_min_seconds=1, reconnect_max_seconds=1)
    return MqttOutput(cfg, device_id="lobby-1", state_dir=tmp_path, spool_days=7, clock=SystemClock())


@pytest.mark.slow
def test_auto_falls_back_to_311_when_the_broker_refuses_version_5(tmp_path: Path) -> None:
    with Mqtt311OnlyBroker() as broker:
        out = make(broker.port, tmp_path, "auto")
        out.start()
        try:
            wait_until(lambda: out.state == LinkState.CONNECTED, 10, "connected over 3.1.1")
            health = out.health()
        finally:
            out.stop()
    assert broker.levels[:2] == [5, 4]
    assert health.protocol == "3.1.1"
    assert health.failures == 1


@pytest.mark.slow
def test_a_pinned_version_5_never_falls_back(tmp_path: Path) -> None:
    with Mqtt311OnlyBroker() as broker:
        out = make(broker.port, tmp_path, "5")
        out.start()
        try:
            wait_until(lambda: out.health().failures >= 2, 10, "two refusals")
            health = out.health()
        finally:
            out.stop()
    assert set(broker.levels) == {5}
    assert health.state == "refused"
    assert health.last_error == (
        "broker refused the connection: Unsupported protocol version (set mqtt.protocol to auto or 3.1.1)"
    )
