"""MQTT 5 first; a broker that only speaks 3.1.1 gets 3.1.1 (protocol: auto)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from agent.clock import SystemClock
from agent.mqtt_client import SHUT_GRACE_S
from agent.transport import protocol_fallback
from agent.transport.link import LinkState
from agent.transport.link_status import LinkStatus
from agent.transport.mqtt import MqttOutput
from agent.transport.protocol_fallback import ProtocolFallback
from agent.transport.settings import MqttConfig
from tests.mosquitto import wait_until
from tests.transport.fake_broker import Mqtt311OnlyBroker


def make(port: int, tmp_path: Path, protocol: str, client_id: str | None = None) -> MqttOutput:
    cfg = MqttConfig(host="127.0.0.1", port=port, protocol=protocol,  # type: ignore[arg-type]
                     reconnect_min_seconds=1, reconnect_max_seconds=1, client_id=client_id)
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


CLIENT = "fallback-under-test"
"""The client id of the tests below: paho names its network thread after it."""


class HoldTheFallback(logging.Handler):
    """Holds the sender thread where the fallback starts (its log line) until paho's thread of the
    old MQTT 5 client is held in turn, in its next log line (the refused connection's disconnect,
    or its next refusal), until ``let_go``: an old network thread that does not end when asked, as
    one in a connect, a TLS handshake or a log write that blocks does not."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.falling_back = threading.Event()
        self.old_thread_held = threading.Event()
        self.let_go = threading.Event()

    def handle(self, record: logging.LogRecord) -> bool:
        """Not under the handler's lock (``Handler.handle`` takes it): two threads are held here."""
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "falling back to MQTT 3.1.1" in message:
            self.falling_back.set()
            self.old_thread_held.wait(30)
        elif record.threadName.startswith("paho-mqtt-client-") and self.falling_back.is_set():
            if self.old_thread_held.is_set():
                return
            self.old_thread_held.set()
            self.let_go.wait(60)


@contextlib.contextmanager
def held_fallback() -> Iterator[HoldTheFallback]:
    """On the fallback's logger (the sender thread's line) and the output's (paho's thread's)."""
    hold = HoldTheFallback()
    logs = [logging.getLogger("agent.transport.protocol_fallback"), logging.getLogger("agent.transport.mqtt")]
    for log in logs:
        log.addHandler(hold)
    try:
        yield hold
    finally:
        hold.let_go.set()
        for log in logs:
            log.removeHandler(hold)


def started_threads(before: set[threading.Thread], name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name == name]


@pytest.mark.slow
def test_the_fallback_starts_the_311_client_while_the_old_clients_thread_does_not_end(tmp_path: Path) -> None:
    """Was: the fallback waited for the MQTT 5 client's network thread with paho's unbounded
    ``loop_stop``, and nothing was sent for as long as that thread did not end. Now it waits
    ``FALLBACK_END_S`` (and paho's grace), then connects over 3.1.1 without it."""
    with Mqtt311OnlyBroker() as broker, held_fallback() as hold:
        out = make(broker.port, tmp_path, "auto", client_id=CLIENT)
        out.start()
        try:
            assert hold.old_thread_held.wait(15), "the old client's thread logged nothing more"
            wait_until(lambda: out.state == LinkState.CONNECTED, 10, "connected over 3.1.1")
            health = out.health()
        finally:
            out.stop(timeout=1.0)
    assert 4 in broker.levels
    assert health.protocol == "3.1.1"


@pytest.mark.slow
def test_a_stop_during_the_fallback_starts_no_311_client_and_nothing_is_published_after_it(
    tmp_path: Path,
) -> None:
    """Was: the fallback (on the sender thread) did not look at the stop: once the old client's
    thread ended, after ``stop`` had returned, it started a 3.1.1 client that connected and
    published ``online`` and discovery (CONNECTED after STOPPED), and its thread ran on. Now a
    stop that began before the new client is installed means none is; one installed before is
    the one ``stop`` ends."""
    before = set(threading.enumerate())
    with Mqtt311OnlyBroker() as broker, held_fallback() as hold:
        out = make(broker.port, tmp_path, "auto", client_id=CLIENT)
        out.start()
        assert hold.old_thread_held.wait(15), "the old client's thread logged nothing more"
        began = time.monotonic()
        out.stop(timeout=1.0)
        took = time.monotonic() - began
        assert out.state == LinkState.STOPPED
        hold.let_go.set()  # the old client's thread ends: the fallback goes on
        for sender in started_threads(before, "mqtt-sender"):
            sender.join(10)
            assert not sender.is_alive(), "the sender thread is still in the fallback"
        running = started_threads(before, f"paho-mqtt-client-{CLIENT}")
        for thread in running:
            thread.join(5)
        levels = list(broker.levels)
    assert took < 1.0 + SHUT_GRACE_S + 1.0, f"stop(timeout=1) took {took:.1f} s"
    alive = [t.name for t in running if t.is_alive()]
    assert (alive, out.state, 4 in levels) == ([], LinkState.STOPPED, False), (
        f"after the stop: paho threads {alive}, state {out.state}, CONNECT levels {levels}"
    )


class RemoveOnFallback(logging.Handler):
    """Moves ``path`` away on the sender thread as the fallback begins (its log line), before
    the MQTT 3.1.1 client reads it: a password file replaced on the device while it runs."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        if "falling back to MQTT 3.1.1" in record.getMessage() and self.path.exists():
            self.path.rename(self.path.with_suffix(".away"))


@pytest.mark.slow
def test_a_fallback_whose_password_file_is_gone_says_so_and_tries_again(tmp_path: Path) -> None:
    """Was: the 3.1.1 client could not be built (the password file had gone since the start),
    the sender thread logged "it retries every 0.5 s", and nothing retried: the output stayed
    without a client, its health showing the MQTT 5 refusal, until the agent was restarted."""
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    hold = RemoveOnFallback(secret)
    log = logging.getLogger("agent.transport.protocol_fallback")
    log.addHandler(hold)
    try:
        with Mqtt311OnlyBroker() as broker:
            cfg = MqttConfig(host="127.0.0.1", port=broker.port, protocol="auto", username="lobby-1",
                             password_file=secret, reconnect_min_seconds=1, reconnect_max_seconds=1)
            out = MqttOutput(cfg, device_id="lobby-1", state_dir=tmp_path, spool_days=7, clock=SystemClock())
            out.start()
            try:
                wait_until(lambda: "password" in (out.health().last_error or ""), 10, "the file named")
                health = out.health()
                secret.with_suffix(".away").rename(secret)
                wait_until(lambda: out.state == LinkState.CONNECTED, 15, "connected over 3.1.1")
                after = out.health()
            finally:
                out.stop(timeout=1.0)
    finally:
        log.removeHandler(hold)
    assert health.state == "failed"
    assert health.last_error is not None
    assert health.last_error.startswith(f"mqtt.password_file {secret}"), health.last_error
    assert "s3cret" not in health.last_error
    assert after.protocol == "3.1.1"
    assert broker.levels.count(4) >= 1


class EndedClient:
    """The refused MQTT 5 client, its network thread already ended."""

    on_disconnect = on_connect = on_connect_fail = on_log = None

    def end_within(self, _seconds: float) -> bool:
        return True


def test_a_fallback_client_that_fails_to_start_for_another_reason_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a ConfigError was caught: any other failure to start the 3.1.1 client (paho's thread
    not starting) left the protocol at 3.1.1 with no client and nothing due, so nothing retried."""
    monkeypatch.setattr(protocol_fallback, "BUILD_RETRY_S", 0.0)
    status = LinkStatus(MQTTProtocolVersion.MQTTv5)
    attempts: list[int] = []

    def start_311() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("can't start new thread")

    fallback = ProtocolFallback(
        auto=True, status=status, stopping=threading.Event(),
        client=EndedClient,  # type: ignore[arg-type]
        start_311=start_311,
    )
    assert fallback.refused(132)
    fallback.run_if_due()
    failed = (status.state, status.last_error)
    fallback.run_if_due()
    assert len(attempts) == 2
    assert failed == (LinkState.FAILED, "RuntimeError: can't start new thread")
    assert (status.state, status.last_error) == (LinkState.CONNECTING, None)
