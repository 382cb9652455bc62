"""Signer: envelope fields, persisted boot counter, sequence blocks reserved before use."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer, encode, kid_for, signing_input
from agent.crypto.canonical import b64url_decode
from agent.crypto.seqstore import STATE_NAME
from agent.errors import KeyFileError, PayloadError
from tests.purity import import_blocked

TOPIC = "emotion-agent/lobby-1/stats"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_envelope_has_every_field_and_a_valid_signature(
    key: Ed25519PrivateKey, tmp_path: Path, clock: FakeClock
) -> None:
    with Signer("lobby-1", key, tmp_path, clock) as signer:
        env = signer.sign("stats", TOPIC, {"people": 7, "share": {"happy": 571}})
    assert sorted(env) == sorted(["v", "typ", "dev", "kid", "boot", "seq", "ts", "topic", "body", "sig"])
    assert env["v"] == 1
    assert (env["typ"], env["dev"], env["topic"]) == ("stats", "lobby-1", TOPIC)
    assert (env["boot"], env["seq"]) == (1, 1)
    assert env["ts"] == 1_700_000_000_000
    assert env["kid"] == kid_for(key.public_key())
    key.public_key().verify(b64url_decode(env["sig"], "sig", 64), signing_input(env))
    assert json.loads(encode(env)) == env


def test_timestamp_is_integer_milliseconds_from_the_clock(key: Ed25519PrivateKey, clock: FakeClock) -> None:
    signer = Signer("lobby-1", key, store=MemorySequenceStore(), clock=clock)
    clock.advance(1.2345)
    assert signer.sign("stats", TOPIC, {})["ts"] == 1_700_000_001_234


def test_boot_counts_starts_and_seq_skips_the_unused_block(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    with Signer("lobby-1", key, tmp_path, block=10) as signer:
        seqs = [signer.sign("stats", TOPIC, {})["seq"] for _ in range(12)]
    assert seqs == list(range(1, 13))
    assert json.loads((tmp_path / STATE_NAME).read_text()) == {"boot": 1, "seq_reserved": 21}
    with Signer("lobby-1", key, tmp_path, block=10) as signer:
        env = signer.sign("stats", TOPIC, {})
    assert (env["boot"], env["seq"]) == (2, 21)


def test_two_signers_cannot_share_a_state_folder(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    with Signer("lobby-1", key, tmp_path), pytest.raises(KeyFileError, match="another signer holds"):
        Signer("lobby-1", key, tmp_path)


def test_corrupt_state_is_refused_rather_than_guessed(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text('{"boot": 3}')
    with pytest.raises(PayloadError, match=r"signer state is unreadable .*refusing to guess"):
        Signer("lobby-1", key, tmp_path)


def test_a_signer_state_that_is_a_folder_is_refused(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).mkdir()  # IsADirectoryError was a traceback
    said = r"signer-state\.json: signer state is unreadable \(IsADirectoryError"
    with pytest.raises(PayloadError, match=said):
        Signer("lobby-1", key, tmp_path)


def test_a_deeply_nested_signer_state_is_refused(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    (tmp_path / STATE_NAME).write_text("[" * 100_000)  # RecursionError was a traceback
    with pytest.raises(PayloadError, match=r"signer state is unreadable \(JSON nested too deeply\)"):
        Signer("lobby-1", key, tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"share": 0.5}, "body.share: 0.5 is not an integer; signed messages carry integers only"),
        ({"a": {"b": [1, 2.0]}}, "body.a.b[1]: 2.0 is not an integer"),
        ({"n": float("nan")}, "body.n: nan is not an integer"),
        ({"n": 2**53}, "body.n: integer 9007199254740992 is outside ±(2**53 - 1)"),
        ({"n": b"raw"}, "body.n: a bytes cannot appear in a signed message"),
        ({1: 2}, "body: object key 1 is not a string"),
        ({"s": "\ud800"}, "body.s: string holds a lone surrogate"),
    ],
)
def test_body_outside_the_integer_domain_is_refused(
    key: Ed25519PrivateKey, body: dict[str, object], message: str
) -> None:
    signer = Signer("lobby-1", key, store=MemorySequenceStore())
    with pytest.raises(PayloadError) as info:
        signer.sign("stats", TOPIC, body)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_booleans_and_null_are_json_literals_not_numbers(key: Ed25519PrivateKey) -> None:
    signer = Signer("lobby-1", key, store=MemorySequenceStore())
    env = signer.sign("alert", TOPIC, {"raised": True, "rule": None, "n": -(2**53 - 1)})
    assert b'"body":{"n":-9007199254740991,"raised":true,"rule":null}' in encode(env)


@pytest.mark.parametrize(
    ("typ", "topic", "message"),
    [
        ("Stats", TOPIC, "typ 'Stats': lower-case letters"),
        ("stats", "emotion-agent/+/stats", "topic: 'emotion-agent/+/stats' holds a wildcard"),
        ("stats", "", "topic: must be a topic name of 1 to 256 characters"),
    ],
)
def test_bad_typ_or_topic_is_refused(key: Ed25519PrivateKey, typ: str, topic: str, message: str) -> None:
    signer = Signer("lobby-1", key, store=MemorySequenceStore())
    with pytest.raises(PayloadError, match=message.replace("+", r"\+")):
        signer.sign(typ, topic, {})


def test_rotation_is_signed_by_the_old_key_and_switches(key: Ed25519PrivateKey) -> None:
    signer = Signer("lobby-1", key, store=MemorySequenceStore())
    new = Ed25519PrivateKey.generate()
    announce = signer.rotate(new, "emotion-agent/lobby-1/keys")
    assert announce["typ"] == "key-rotation"
    assert announce["kid"] == kid_for(key.public_key())
    assert announce["body"]["new_key"]["kid"] == kid_for(new.public_key())
    after = signer.sign("stats", TOPIC, {})
    assert after["kid"] == kid_for(new.public_key())
    assert after["seq"] == announce["seq"] + 1


def test_concurrent_signing_hands_out_each_seq_once(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    with Signer("lobby-1", key, tmp_path, block=3) as signer, ThreadPoolExecutor(4) as pool:
        seqs = list(pool.map(lambda _: signer.sign("stats", TOPIC, {})["seq"], range(200)))
    assert sorted(seqs) == list(range(1, 201))


def test_crypto_is_pure_logic_and_does_nothing_at_import() -> None:
    """Importing and using agent.crypto works with cv2, LiteRT, paho and picamera2 blocked."""
    result = import_blocked(
        ["agent.crypto", "agent.commands.verify", "agent.commands.keys_cmds"],
        before="import os; before = dict(os.environ)",
        then=(
            "assert dict(os.environ) == before\n"
            "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
            "k = Ed25519PrivateKey.generate()\n"
            "s = agent.crypto.Signer('d', k, store=agent.crypto.MemorySequenceStore())\n"
            "v = agent.crypto.Verifier([k.public_key()])\n"
            "assert v.check(agent.crypto.encode(s.sign('t', 'a', {}))).ok"
        ),
    )
    assert result.ok, result.stderr


@pytest.mark.parametrize("state", ['{"boot": 1, "seq_reserved": 9007199254740993}',
                                   '{"boot": 9007199254740992, "seq_reserved": 5}'])
def test_a_sequence_past_the_json_safe_range_is_refused_naming_the_file(
    key: Ed25519PrivateKey, tmp_path: Path, state: str
) -> None:
    """Valid JSON, but every message signed from it would fail on the ±(2**53 - 1) rule of
    signed integers, naming no file (found by review)."""
    (tmp_path / STATE_NAME).write_text(state)
    with pytest.raises(PayloadError, match=r"signer-state\.json: signer state is unreadable .*2\*\*53"):
        Signer("lobby-1", key, tmp_path)
