"""Commands are a closed set: anything else is refused with a reason, never acted on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import PayloadError
from agent.transport.commands import MAX_COMMAND_BYTES, Command, CommandParser

BASE = "emotion-agent/lobby-1"
PRIVACY = f"{BASE}/cmd/privacy_mode/set"
CHECKPOINT = f"{BASE}/cmd/checkpoint"


@pytest.fixture
def parser() -> CommandParser:
    return CommandParser(BASE)


def test_subscribes_to_exactly_the_two_command_topics(parser: CommandParser) -> None:
    assert parser.topics == [CHECKPOINT, PRIVACY]


@pytest.mark.parametrize(
    ("payload", "on"), [(b"ON", True), (b"OFF", False), (b" on\n", True), (b"off", False)]
)
def test_privacy_mode_accepts_on_and_off(parser: CommandParser, payload: bytes, on: bool) -> None:
    assert parser.parse(PRIVACY, payload) == Command("privacy_mode", on=on)


@pytest.mark.parametrize("payload", [b"", b"PRESS", b"press"])
def test_checkpoint_accepts_empty_or_press(parser: CommandParser, payload: bytes) -> None:
    assert parser.parse(CHECKPOINT, payload) == Command("checkpoint")


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (f"{BASE}/cmd/reboot", b"ON", "is not one of"),
        ("emotion-agent/other/cmd/privacy_mode/set", b"ON", "is not one of"),
        (PRIVACY, b'{"state": "ON"', "is not ON or OFF"),
        (PRIVACY, b'{"state": "ON"}', "is not ON or OFF"),
        (PRIVACY, b"1", "is not ON or OFF"),
        (PRIVACY, b"\xff\xfeON", "is not ASCII"),
        (PRIVACY, b"O" * (MAX_COMMAND_BYTES + 1), f"at most {MAX_COMMAND_BYTES}"),
        (CHECKPOINT, b"now please", "is not empty or PRESS"),
    ],
)
def test_malformed_commands_are_refused_with_the_reason(
    parser: CommandParser, topic: str, payload: bytes, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        parser.parse(topic, payload)


def test_a_retained_command_replayed_by_the_broker_is_refused(parser: CommandParser) -> None:
    with pytest.raises(PayloadError, match="retained command is a stale replay"):
        parser.parse(PRIVACY, b"ON", retained=True)


def test_a_huge_payload_is_refused_before_decoding(parser: CommandParser) -> None:
    with pytest.raises(PayloadError, match="payload of 1048576 bytes is too long"):
        parser.parse(PRIVACY, b"\x00" * 1_048_576)


@given(payload=st.binary(max_size=200), which=st.sampled_from([PRIVACY, CHECKPOINT]))
def test_random_bytes_give_a_command_or_a_payload_error_never_anything_else(
    payload: bytes, which: str
) -> None:
    parser = CommandParser(BASE)
    try:
        command = parser.parse(which, payload)
    except PayloadError:
        return
    word = payload.decode("ascii").strip().upper()
    assert word in ("ON", "OFF", "", "PRESS")
    assert command.name == ("privacy_mode" if which == PRIVACY else "checkpoint")
