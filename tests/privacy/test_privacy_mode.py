"""Privacy mode: any one source ON pauses; every change is an event; SIGUSR1 and a flag file work."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agent.audit.entries import validate_data
from agent.clock import FakeClock
from agent.errors import PayloadError
from agent.privacy.privacy_mode import FlagFilePoller, PrivacyMode, SignalToggle, parse_switch


def test_any_one_source_pauses_and_all_must_clear(clock: FakeClock) -> None:
    mode = PrivacyMode(clock)
    assert not mode.paused
    on = mode.set("mqtt", True)
    assert on is not None
    assert (on.source, on.source_on, on.paused, on.was_paused) == ("mqtt", True, True, False)
    clock.advance(5)
    file_on = mode.set("file", True)
    assert file_on is not None
    assert (file_on.paused, file_on.was_paused) == (True, True)
    mqtt_off = mode.set("mqtt", False)
    assert mqtt_off is not None
    assert mqtt_off.paused  # the file still holds it
    assert mode.sources_on() == ["file"]
    last = mode.set("file", False)
    assert last is not None
    assert (last.paused, last.was_paused) == (False, True)
    assert not mode.paused


def test_setting_the_same_state_is_not_an_event(clock: FakeClock) -> None:
    mode = PrivacyMode(clock)
    assert mode.set("mqtt", False) is None
    assert mode.set("mqtt", True) is not None
    assert mode.set("mqtt", True) is None


def test_event_payload_is_integers_and_strings(clock: FakeClock) -> None:
    event = PrivacyMode(clock).set("signal", True)
    assert event is not None
    assert event.as_payload() == {
        "ts": int(clock.time() * 1000), "state": "ON", "changed_by": "signal", "source_state": "ON"}


def test_state_payload_at_start_gives_the_mode_in_force(clock: FakeClock) -> None:
    mode = PrivacyMode(clock, initial={"file": True})
    assert mode.state_payload()["state"] == "ON"
    mode.set("file", False)
    assert mode.state_payload() == {
        "ts": int(clock.time() * 1000), "state": "OFF", "changed_by": "start", "source_state": "OFF"}


def test_audit_fields_fit_the_audit_log_schema(clock: FakeClock) -> None:
    event = PrivacyMode(clock).set("file", True)
    assert event is not None
    assert validate_data("privacy_mode", event.audit_fields()) == {"mode": "on", "source": "file"}


def test_unknown_source_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unknown privacy-mode source 'http'"):
        PrivacyMode(clock).set("http", True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("payload", "on"), [(b"ON", True), (b"off", False), (b" 1\n", True), (b"FALSE", False)]
)
def test_switch_payloads(payload: bytes, on: bool) -> None:
    assert parse_switch(payload) is on


def test_bad_switch_payload_names_what_was_found() -> None:
    with pytest.raises(PayloadError, match="payload 'MAYBE' is not ON or OFF"):
        parse_switch(b"maybe")


def test_flag_file_pauses_while_it_exists(clock: FakeClock, tmp_path: Path) -> None:
    mode = PrivacyMode(clock)
    flag = tmp_path / "privacy"
    poller = FlagFilePoller(flag, mode)
    assert poller.poll() is None
    flag.touch()
    event = poller.poll()
    assert event is not None
    assert event.paused
    assert poller.poll() is None
    flag.unlink()
    cleared = poller.poll()
    assert cleared is not None
    assert not cleared.paused


def test_flag_file_is_checked_once_per_interval(clock: FakeClock, tmp_path: Path) -> None:
    mode = PrivacyMode(clock)
    flag = tmp_path / "privacy"
    poller = FlagFilePoller(flag, mode, clock, interval_s=1.0)
    assert poller.poll() is None  # checked: absent
    flag.touch()
    clock.advance(0.5)
    assert poller.poll() is None  # not yet due: the file is not looked at
    assert not mode.paused
    clock.advance(0.5)
    event = poller.poll()
    assert event is not None
    assert event.paused


def test_sigusr1_toggles_through_the_main_loop(clock: FakeClock) -> None:
    mode = PrivacyMode(clock)
    toggle = SignalToggle(mode)
    before = signal.getsignal(signal.SIGUSR1)
    toggle.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert not mode.paused  # the handler only records; the loop applies
        (event,) = toggle.drain()
        assert event.source == "signal"
        assert mode.paused
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert len(toggle.drain()) == 3
        assert not mode.paused  # odd number of toggles from ON → OFF
        assert toggle.drain() == []
    finally:
        toggle.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before  # the previous handler is back


@pytest.mark.parametrize("flag", ["''", "'.'", "/run/emotion-agent/", "/run/emotion-agent/."])
def test_a_flag_file_that_names_a_folder_is_refused(flag: str, clock: FakeClock) -> None:
    """'' is Path('.'), the working folder, which always exists: the poller held privacy mode
    on for ever (the camera never opened) while check-config called the config valid."""
    from agent.config import parse_config  # noqa: PLC0415
    from agent.errors import ConfigError  # noqa: PLC0415

    if flag == "''":
        event = FlagFilePoller(Path(""), PrivacyMode(clock)).poll()
        assert event is not None
        assert event.paused  # what run did with it
    with pytest.raises(ConfigError) as info:
        parse_config(f"device_id: a\npolicy: {{privacy_mode: {{flag_file: {flag}}}}}\n", "c.yaml")
    assert "policy.privacy_mode.flag_file (c.yaml:2):" in str(info.value)
    assert "names a folder, not a file" in str(info.value)


def test_a_path_starting_with_a_tilde_is_refused_naming_its_key() -> None:
    """The agent does not expand ~: state_dir ~/ea was a folder named ~ in the working folder."""
    from agent.config import parse_config  # noqa: PLC0415
    from agent.errors import ConfigError  # noqa: PLC0415

    for lines, key in [
        ("state_dir: ~/ea\n", "state_dir"),
        ("policy: {privacy_mode: {flag_file: ~/privacy}}\n", "policy.privacy_mode.flag_file"),
        ("keys: {private_key: ~pi/device.key}\n", "keys.private_key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config("device_id: a\n" + lines, "c.yaml")
        assert f"{key} (c.yaml:2): starts with ~, which is not expanded" in str(info.value)
