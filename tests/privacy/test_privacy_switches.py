"""``policy.privacy_mode``'s switches are obeyed: ``mqtt: false`` ignores the MQTT command,
``sigusr1: false`` ignores the signal (without dying of it), and the flag file is looked at
every ``poll_seconds`` (all three were read by no code: found by review)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import load_config
from agent.service import Service
from agent.transport.commands import Command
from tests.test_service import NO_GATE, CountingPipeline, ScriptedSource, write_config

T0 = 1_800_000_000.0


def service_with(tmp_path: Path, switches: str) -> tuple[Service, FakeClock]:
    policy = f"policy: {{privacy_mode: {{{switches}}}}}\n"
    path = write_config(tmp_path, "scripted.mp4", extra=NO_GATE + policy)
    clock = FakeClock(start=T0)
    service = Service(
        load_config(path), path, clock,
        opener=lambda s, o, c: ScriptedSource(c, 1000, False),
        pipeline_factory=lambda _c: CountingPipeline(),  # type: ignore[arg-type,return-value]
    )
    return service, clock


@pytest.mark.parametrize(("allowed", "paused"), [("true", True), ("false", False)])
def test_the_mqtt_switch_is_obeyed_only_when_the_policy_allows_it(
    tmp_path: Path, allowed: str, paused: bool
) -> None:
    service, clock = service_with(tmp_path, f"mqtt: {allowed}")
    service.start()
    try:
        service._enqueue_command(Command("privacy_mode", on=True))
        clock.advance(1.0)
        service.step()
        assert service.privacy.paused is paused
    finally:
        service.close()


@pytest.mark.parametrize(("allowed", "paused"), [("true", True), ("false", False)])
def test_sigusr1_toggles_only_when_the_policy_allows_it(tmp_path: Path, allowed: str, paused: bool) -> None:
    service, clock = service_with(tmp_path, f"sigusr1: {allowed}")
    service.start()
    service.signals.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)  # with the policy's "no" too, the process lives on
        clock.advance(1.0)
        service.step()
        assert service.privacy.paused is paused
    finally:
        service.signals.restore()
        service.close()


def test_the_flag_file_is_looked_at_every_poll_seconds(tmp_path: Path) -> None:
    flag = tmp_path / "privacy.flag"
    service, clock = service_with(tmp_path, f'flag_file: "{flag}", poll_seconds: 10')
    service.start()
    try:
        service.step()  # the first look: no file
        flag.touch()
        clock.advance(5.0)
        service.step()
        before_due = service.privacy.paused
        clock.advance(5.0)
        service.step()
        assert (before_due, service.privacy.paused) == (False, True)
    finally:
        service.close()
