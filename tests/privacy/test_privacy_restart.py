"""Privacy mode set by a command or SIGUSR1 survives a restart (power cut, crash, watchdog).

Before: the MQTT switch and the signal lived in memory only, so any restart reopened the camera
that an operator had closed, and with ``mqtt.commands.operator_key`` set that was a way round
the rule that only a signed command may turn the camera back on (found by review)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.camera.base import SourceOptions
from agent.clock import Clock, FakeClock
from agent.config import load_config
from agent.errors import PayloadError
from agent.privacy.privacy_mode import HELD_NAME
from agent.service import Service
from agent.transport.commands import Command
from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, messages, write_config

T0 = 1_800_000_000.0


def build(tmp_path: Path, opened: list[ScriptedSource], switches: str = "") -> tuple[Service, FakeClock]:
    policy = f"policy: {{privacy_mode: {{{switches}}}}}\n" if switches else ""
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + policy)
    clock = FakeClock(start=T0)

    def opener(source: str, options: SourceOptions, clock_: Clock) -> ScriptedSource:
        opened.append(ScriptedSource(clock_, 1000, False))
        return opened[-1]

    service = Service(
        load_config(path), path, clock, opener=opener,
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    return service, clock


def turns(service: Service, clock: FakeClock, n: int = 5) -> None:
    for _ in range(n):
        clock.advance(1.0)
        service.step()


def test_privacy_mode_set_over_mqtt_keeps_the_camera_closed_after_a_restart(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, clock = build(tmp_path, opened)
    service.start()
    try:
        turns(service, clock)
        service._enqueue_command(Command("privacy_mode", on=True))
        turns(service, clock)
        assert service.privacy.paused
    finally:
        service.close()
    opened.clear()
    again, clock = build(tmp_path, opened)
    again.start()
    try:
        turns(again, clock)
        assert again.privacy.paused
        assert opened == [], "the camera an operator closed was reopened by the restart"
        assert again.privacy.sources_on() == ["mqtt"]
        again._enqueue_command(Command("privacy_mode", on=False))  # the switch still works
        turns(again, clock)
        assert not again.privacy.paused
        assert len(opened) == 1
    finally:
        again.close()
    states = [(m["body"]["state"], m["body"]["changed_by"]) for m in messages(tmp_path, "privacy_mode")]
    # first run: start, the command; second run: start (ON, the held state), the command
    assert states == [("OFF", "start"), ("ON", "mqtt"), ("ON", "start"), ("OFF", "mqtt")]


def test_sigusr1_privacy_mode_survives_a_restart(tmp_path: Path) -> None:
    opened: list[ScriptedSource] = []
    service, clock = build(tmp_path, opened)
    service.start()
    try:
        service.signals.toggle.handler(10, None)
        turns(service, clock)
        assert service.privacy.paused
    finally:
        service.close()
    again, clock = build(tmp_path, opened)
    again.start()
    try:
        turns(again, clock)
        assert again.privacy.sources_on() == ["signal"]
    finally:
        again.close()


def test_a_switch_the_policy_no_longer_allows_holds_nothing_after_a_restart(tmp_path: Path) -> None:
    """As at a reload: a way to pause that the policy took away releases its hold."""
    opened: list[ScriptedSource] = []
    service, clock = build(tmp_path, opened)
    service.start()
    try:
        service._enqueue_command(Command("privacy_mode", on=True))
        turns(service, clock)
    finally:
        service.close()
    again, clock = build(tmp_path, opened, "mqtt: false")
    again.start()
    try:
        turns(again, clock)
        assert not again.privacy.paused
    finally:
        again.close()


@pytest.mark.parametrize("text", [
    "{not json", '{"mqtt": "yes", "signal": false}', "[" * 100_000,
    '{"mqtt": false, "signal": false, "signed_after_ms": true}',  # the signed-command order
])
def test_a_damaged_privacy_state_file_stops_the_start_naming_it(tmp_path: Path, text: str) -> None:
    opened: list[ScriptedSource] = []
    service, _clock = build(tmp_path, opened)
    service.close()
    (tmp_path / "state" / HELD_NAME).write_text(text)
    with pytest.raises(PayloadError, match=HELD_NAME):
        build(tmp_path, opened)


def test_a_privacy_state_the_disk_refuses_is_audited_and_the_mode_still_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[ScriptedSource] = []
    service, clock = build(tmp_path, opened)
    service.start()

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.privacy.privacy_mode.write_atomic", full)
    try:
        service._enqueue_command(Command("privacy_mode", on=True))
        turns(service, clock)
        assert service.privacy.paused
    finally:
        service.close()
    audit = (tmp_path / "state" / "audit").glob("segment-*.jsonl")
    text = "".join(p.read_text() for p in audit)
    assert "privacy_state_unsaved" in text
    assert "No space left on device" in text


def test_a_signed_off_replayed_after_a_restart_does_not_reopen_the_camera(tmp_path: Path) -> None:
    """The gate's nonces are memory only: after a restart the last signed OFF could be replayed
    once within its window and turn the camera back on, after the operator had closed it with
    a plain ON. The order of signed commands is kept with the privacy state (found by review)."""
    opened: list[ScriptedSource] = []
    service, clock = build(tmp_path, opened)
    service.start()
    signed_off = Command("privacy_mode", on=False, ts_ms=int(clock.time() * 1000) + 500, nonce="n" * 16)
    try:
        service._enqueue_command(Command("privacy_mode", on=True))
        turns(service, clock)
        service._enqueue_command(signed_off)
        turns(service, clock)
        assert not service.privacy.paused  # the operator's signed OFF, applied
        service._enqueue_command(Command("privacy_mode", on=True))
        turns(service, clock)
        assert service.privacy.paused
    finally:
        service.close()
    again, clock = build(tmp_path, opened)
    again.start()
    try:
        clock.advance(20.0)  # well inside the 60 s window of the OFF's ts
        again._enqueue_command(signed_off)
        turns(again, clock)
        assert again.privacy.paused
    finally:
        again.close()
