"""Bounded fuzz (hypothesis) of what a user or an attacker can hand the agent: config text, MQTT
commands and spooled rows. The property is always the same: a value or the agent's own
InputError (exit 2, one line), never another exception, hang or crash.

``make test`` runs a short version; ``make fuzz`` sets EMOTION_AGENT_FUZZ_EXAMPLES for a few
minutes' run.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock import FakeClock
from agent.config import AgentConfig, parse_config
from agent.crypto import MemorySequenceStore, Signer
from agent.crypto.envelope import encode
from agent.errors import ConfigError, InputError, PayloadError
from agent.strict_yaml import YamlRefused
from agent.strict_yaml import parse as parse_yaml
from agent.transport.commands import CommandParser, sign_command
from agent.transport.rowcheck import RowCheck
from agent.transport.spool_types import SpoolItem

EXAMPLES = int(os.environ.get("EMOTION_AGENT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOWEST_S = 5.0
"""No single input may take this long (the alias bomb took 10 s, a 200k-point zone 40 s)."""

BASE: dict[str, Any] = {
    "schema_version": 1,
    "device_id": "lobby-1",
    "site": {"jurisdiction": "US", "context": "retail", "purpose": "analytics"},
    "camera": {"source": "/dev/video0", "fps": 5, "loop": False, "realtime": True},
    "vision": {"detector": "full_range", "threads": 1, "quality": {"min_face_px": 40}},
    "analytics": {"window_seconds": 60, "min_people": 5},
    "mqtt": {"host": "127.0.0.1", "port": 8883, "base_topic": "emotion-agent/lobby-1"},
    "policy": {"zones": [{"name": "door", "polygon": [[0, 0], [0.5, 0], [0.5, 0.5]]}]},
    "state_dir": "/var/lib/emotion-agent",
}
assert isinstance(parse_config(yaml.safe_dump(BASE)), AgentConfig)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["+", "#", "/", "$SYS", "yes", "on", "0x10", ".inf", "~", "", "/", "/etc"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _paths(v, (*prefix, i))
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[head] = _set(data[head], rest, value)
    return copy


def _bounded(call: Any, *args: Any) -> Any:
    started = time.monotonic()
    try:
        return call(*args)
    finally:
        assert time.monotonic() - started < SLOWEST_S


@FUZZ
@given(st.data())
def test_a_mutated_config_loads_or_is_refused_with_a_config_error(data: st.DataObject) -> None:
    doc: Any = BASE
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _set(doc, path, data.draw(values))
    text = yaml.safe_dump(doc, allow_unicode=True)
    outcome: object
    try:
        outcome = _bounded(parse_config, text, "fuzz.yaml")
    except ConfigError as exc:
        outcome = str(exc)
    assert isinstance(outcome, AgentConfig) or str(outcome).startswith("fuzz.yaml")


yaml_alphabet = st.sampled_from([*"ab:-[]{},&*!?|>'\"#%@` \n\t0123456789.~+$/\\", "\u00e9", "\x00", "\ufeff"])


@FUZZ
@given(st.text(yaml_alphabet, max_size=400) | st.text(max_size=400))
def test_any_text_parses_to_plain_data_or_is_refused(text: str) -> None:
    try:
        data, lines = _bounded(parse_yaml, text, "fuzz.yaml")
    except YamlRefused as exc:
        refusal = str(exc)
        assert refusal.startswith("fuzz.yaml")
        return
    stack = [data]
    while stack:
        item = stack.pop()
        assert item is None or isinstance(item, (bool, int, float, str, list, dict))
        stack += item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
    assert all(isinstance(line, int) and line >= 1 for line in lines.values())
    with contextlib.suppress(ConfigError):  # anything else fails the test
        parse_config(text, "fuzz.yaml")


OPERATOR = Ed25519PrivateKey.generate()
BASE_TOPIC = "emotion-agent/lobby-1"
TOPICS = [f"{BASE_TOPIC}/cmd/privacy_mode/set", f"{BASE_TOPIC}/cmd/checkpoint", f"{BASE_TOPIC}/x", "#", ""]
SIGNED = encode(sign_command(OPERATOR, "lobby-1", "OFF", 1_800_000_000_000, "n" * 22))


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    flips = st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), min_size=1, max_size=4)

    def flip(changes: list[tuple[int, int]]) -> bytes:
        out = bytearray(seed)
        for i, b in changes:
            out[i] = b
        return bytes(out)

    return flips.map(flip)


@FUZZ
@given(
    st.sampled_from(TOPICS) | st.text(max_size=60),
    st.binary(max_size=600)
    | st.sampled_from([b"ON", b"off", b"PRESS", b" on ", SIGNED])
    | _mutations(SIGNED),
    st.booleans(),
    st.booleans(),
)
def test_any_command_is_a_command_or_a_payload_error(
    topic: str, payload: bytes, retained: bool, with_operator: bool
) -> None:
    key = OPERATOR.public_key() if with_operator else None
    parser = CommandParser(BASE_TOPIC, device_id="lobby-1", operator_key=key)
    try:
        command = parser.parse(topic, payload, retained=retained)
    except PayloadError:
        return
    assert command.name in ("privacy_mode", "checkpoint")
    assert not retained


DEVICE = Ed25519PrivateKey.generate()
_signer = Signer("lobby-1", DEVICE, clock=FakeClock(start=1_800_000_000.0), store=MemorySequenceStore())
STATS = encode(_signer.sign("stats", f"{BASE_TOPIC}/stats", {"people": 5}))


@FUZZ
@given(
    st.sampled_from([f"{BASE_TOPIC}/stats", f"{BASE_TOPIC}/cmd/privacy_mode/set", "other/x"])
    | st.sampled_from([f"{BASE_TOPIC}/#"])
    | st.text(max_size=80),
    st.binary(max_size=600) | st.just(STATS) | _mutations(STATS),
)
def test_any_spooled_row_is_sent_or_refused_with_a_reason(topic: str, payload: bytes) -> None:
    check = RowCheck(BASE_TOPIC, "lobby-1", DEVICE.public_key())
    reason = check.check(SpoolItem(1, topic, payload, False, 0))
    if reason is None:  # only this device's own, untouched, signed message for that topic
        assert topic == f"{BASE_TOPIC}/stats"
        assert payload == STATS
    else:
        assert isinstance(reason, str)


def test_the_fuzz_targets_raise_input_errors_only() -> None:
    """The classes the properties accept are all exit-2 input errors."""
    assert issubclass(ConfigError, InputError)
    assert issubclass(YamlRefused, InputError)
    assert issubclass(PayloadError, InputError)
