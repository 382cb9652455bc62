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


def reload_with(service: Service, clock: FakeClock, tmp_path: Path, switches: str) -> None:
    write_config(tmp_path, "scripted.mp4", extra=NO_GATE + f"policy: {{privacy_mode: {{{switches}}}}}\n")
    service.signals.request_reload()
    clock.advance(3.0)
    service.step()


def switch_on(service: Service, clock: FakeClock) -> None:
    service._enqueue_command(Command("privacy_mode", on=True))
    clock.advance(3.0)
    service.step()


def test_an_on_the_policy_ignored_does_not_make_the_next_allowed_on_a_duplicate(tmp_path: Path) -> None:
    """The command gate remembered the ignored ON as in force, so once a reload allowed the
    switch, Home Assistant's ON was dropped as a duplicate and the camera stayed on."""
    service, clock = service_with(tmp_path, "mqtt: false")
    service.start()
    try:
        switch_on(service, clock)
        ignored = service.privacy.paused
        reload_with(service, clock, tmp_path, "mqtt: true")
        switch_on(service, clock)
        assert (ignored, service.privacy.paused) == (False, True)
    finally:
        service.close()


def test_a_switch_released_by_a_reload_can_be_turned_on_again(tmp_path: Path) -> None:
    """A reload that takes the switch away releases its hold; when a later reload gives it back,
    the next ON pauses capture again (it was dropped as a duplicate of the released ON)."""
    service, clock = service_with(tmp_path, "mqtt: true")
    service.start()
    try:
        switch_on(service, clock)
        held = service.privacy.paused
        reload_with(service, clock, tmp_path, "mqtt: false")
        released = not service.privacy.paused
        reload_with(service, clock, tmp_path, "mqtt: true")
        switch_on(service, clock)
        assert (held, released, service.privacy.paused) == (True, True, True)
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
