"""Verifier: every mutation of a signed message is rejected with a precise reason."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer, Verifier, encode, kid_for
from agent.crypto.canonical import b64url_decode, b64url_encode
from agent.crypto.envelope import FIELDS
from agent.crypto.verify import Gap, topic_matches, verify_stream

TOPIC = "emotion-agent/lobby-1/stats"
BAD_SIG = "signature does not verify with key "


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(key: Ed25519PrivateKey, clock: FakeClock) -> Signer:
    return Signer("lobby-1", key, store=MemorySequenceStore(), clock=clock)


@pytest.fixture
def verifier(key: Ed25519PrivateKey, clock: FakeClock) -> Verifier:
    return Verifier([key.public_key()], clock=clock)


def _msg(signer: Signer, **body: Any) -> dict[str, Any]:
    return signer.sign("stats", TOPIC, body or {"people": 6, "share": {"happy": 500, "sad": 167}})


def _changed(value: Any) -> Any:
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("b" if value[-1:] != "b" else "c")
    if isinstance(value, dict):
        return {**value, "people": 7}
    raise AssertionError(value)


def test_a_genuine_message_passes(signer: Signer, verifier: Verifier) -> None:
    result = verifier.check(encode(_msg(signer)), arrival_topic=TOPIC)
    assert (result.status, result.reason, result.gaps) == ("ok", "", ())


@pytest.mark.parametrize("name", [f for f in FIELDS if f != "sig"])
def test_every_changed_field_is_rejected(signer: Signer, verifier: Verifier, name: str) -> None:
    env = _msg(signer)
    env[name] = _changed(env[name])
    result = verifier.check(json.dumps(env))
    assert result.status == "rejected"
    expected = {
        "v": "field 'v' is 2; this verifier reads version 1",
        "kid": f"unknown kid {env['kid']}: not a trusted key nor announced by a verified key-rotation",
    }.get(name, BAD_SIG)
    assert result.reason.startswith(expected)


def test_kid_of_another_trusted_key_fails_the_signature(signer: Signer, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    env = _msg(signer)
    env["kid"] = kid_for(other)
    result = Verifier([key.public_key(), other], max_skew_s=None).check(json.dumps(env))
    assert result.reason == (
        f"signature does not verify with key {kid_for(other)}: "
        "the message was altered or signed by another key"
    )


@pytest.mark.parametrize("name", FIELDS)
def test_every_dropped_field_is_named(signer: Signer, verifier: Verifier, name: str) -> None:
    env = _msg(signer)
    del env[name]
    result = verifier.check(json.dumps(env))
    assert (result.status, result.reason) == ("rejected", f"missing field(s): {name}")


@pytest.mark.parametrize("extra", ["x", "SIG", "alg"])
def test_an_added_field_is_named(signer: Signer, verifier: Verifier, extra: str) -> None:
    env = _msg(signer)
    env[extra] = 1
    result = verifier.check(json.dumps(env))
    assert result.status == "rejected"
    assert result.reason.startswith(f"unexpected field(s): {extra}; the envelope has exactly v, typ, dev")


def test_a_field_added_inside_the_body_breaks_the_signature(signer: Signer, verifier: Verifier) -> None:
    env = _msg(signer)
    env["body"]["extra"] = 0
    assert verifier.check(json.dumps(env)).reason.startswith(BAD_SIG)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("seq", "5", "field 'seq' must be an integer"),
        ("seq", 0, "field 'seq' is 0; it must be at least 1"),
        ("boot", True, "field 'boot' must be an integer"),
        ("ts", -1, "field 'ts' is -1; it must be at least 0"),
        ("body", [], "field 'body' must be a dict"),
        ("dev", "Lobby", "field 'dev' 'Lobby' does not match"),
        # Python's ``$`` also matches before a final newline (found by a hostile-input probe)
        ("dev", "lobby-1\n", "field 'dev' 'lobby-1\\n' does not match"),
        ("typ", "stats\n", "field 'typ' 'stats\\n' does not match"),
        ("topic", "a/#", "field 'topic': 'a/#' holds a wildcard or NUL"),
        ("sig", 5, "field 'sig' must be a str"),
    ],
)
def test_wrongly_typed_fields_are_named(
    signer: Signer, verifier: Verifier, name: str, value: Any, reason: str
) -> None:
    env = _msg(signer)
    env[name] = value
    assert verifier.check(json.dumps(env)).reason.startswith(reason)


def test_key_order_and_whitespace_do_not_matter(signer: Signer, verifier: Verifier) -> None:
    """The signature covers the canonical form, so any member order or layout verifies."""
    rng = random.Random(7)  # noqa: S311 - shuffles test data, not keys
    for _ in range(20):
        env = _msg(signer)
        items = list(env.items())
        rng.shuffle(items)
        text = json.dumps(dict(items), indent=rng.choice([None, 1, 4]), ensure_ascii=rng.random() < 0.5)
        assert verifier.check(text).ok


def test_every_bit_of_the_signature_flipped_is_rejected(signer: Signer, verifier: Verifier) -> None:
    env = _msg(signer)
    raw = b64url_decode(env["sig"], "sig", 64)
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        result = verifier.check(json.dumps({**env, "sig": b64url_encode(bytes(flipped))}))
        assert result.status == "rejected", bit
        assert result.reason.startswith(BAD_SIG), bit
    assert verifier.check(json.dumps(env)).ok


def test_sig_text_variants_that_decode_alike_are_refused(signer: Signer, verifier: Verifier) -> None:
    """Unused trailing bits or padding would give the same bytes: refused as non-canonical."""
    env = _msg(signer)
    last = env["sig"][-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = alphabet[(alphabet.index(last) & ~0b1111) | ((alphabet.index(last) + 1) & 0b1111)]
    cases = {
        env["sig"][:-1] + same_bytes: "field 'sig': non-canonical base64url (unused trailing bits are set)",
        env["sig"] + "==": "field 'sig': not unpadded base64url text",
        env["sig"][:-2]: "field 'sig': decodes to 63 bytes, expected 64",
    }
    for sig, reason in cases.items():
        assert verifier.check(json.dumps({**env, "sig": sig})).reason == reason


def test_every_bit_of_the_published_bytes_flipped_never_passes(signer: Signer, verifier: Verifier) -> None:
    payload = encode(_msg(signer))
    for bit in range(len(payload) * 8):
        mutated = bytearray(payload)
        mutated[bit // 8] ^= 1 << (bit % 8)
        result = verifier.check(bytes(mutated))
        assert result.status in {"rejected", "malformed"}, (bit, bytes(mutated))
        assert result.reason
    assert verifier.check(payload).ok


def test_replay_is_named(signer: Signer, verifier: Verifier) -> None:
    first = encode(_msg(signer))
    assert verifier.check(first).ok
    result = verifier.check(first)
    assert result.status == "rejected"
    assert result.reason.startswith("replay: seq 1 was already accepted from (dev lobby-1, kid ")


def test_reordered_messages_are_rejected(signer: Signer, verifier: Verifier) -> None:
    one, two = encode(_msg(signer)), encode(_msg(signer))
    assert verifier.check(two).ok
    assert verifier.check(one).reason == (
        "out of order: seq 1 (boot 1) after seq 2 (boot 1); sequence numbers only grow, even across boots"
    )


def test_an_older_boot_after_a_newer_one_is_rejected(key: Ed25519PrivateKey, verifier: Verifier) -> None:
    old = Signer("lobby-1", key, store=MemorySequenceStore(boot=1, first_seq=5000), clock=FakeClock())
    new = Signer("lobby-1", key, store=MemorySequenceStore(boot=2, first_seq=10), clock=FakeClock())
    assert verifier.check(encode(_msg(new))).ok
    result = verifier.check(encode(_msg(old)))
    assert result.reason.startswith("boot 1 is older than boot 2 already seen from (dev lobby-1, kid ")


def test_a_new_boot_reusing_sequence_numbers_is_rejected(key: Ed25519PrivateKey, verifier: Verifier) -> None:
    first = Signer("lobby-1", key, store=MemorySequenceStore(boot=1, first_seq=1), clock=FakeClock())
    again = Signer("lobby-1", key, store=MemorySequenceStore(boot=2, first_seq=1), clock=FakeClock())
    for _ in range(3):
        assert verifier.check(encode(_msg(first))).ok
    assert verifier.check(encode(_msg(again))).reason.startswith("replay: seq 1 was already accepted")
    assert verifier.check(encode(_msg(again))).reason.startswith("replay: seq 2")
    _msg(again)
    assert verifier.check(encode(_msg(again))).ok  # seq 4 is new


def test_gap_inside_a_boot_is_reported_and_a_new_boot_jump_is_not(
    key: Ed25519PrivateKey, signer: Signer, verifier: Verifier
) -> None:
    assert verifier.check(encode(_msg(signer))).ok
    _msg(signer), _msg(signer)
    result = verifier.check(encode(_msg(signer)))
    assert result.ok
    assert result.gaps == (Gap("lobby-1", kid_for(key.public_key()), 1, 2, 3),)
    rebooted = Signer("lobby-1", key, store=MemorySequenceStore(boot=2, first_seq=257), clock=FakeClock())
    after = verifier.check(encode(_msg(rebooted)))
    assert (after.ok, after.gaps) == (True, ())


def test_message_arriving_on_another_topic_is_rejected(signer: Signer, verifier: Verifier) -> None:
    line = json.dumps({"topic": "emotion-agent/lobby-1/alert", "payload": encode(_msg(signer)).decode()})
    assert verifier.check_line(line).reason == (
        "signed for topic 'emotion-agent/lobby-1/stats' but arrived on 'emotion-agent/lobby-1/alert'"
    )


def test_expected_topic_filter_binds_bare_envelopes(key: Ed25519PrivateKey, signer: Signer) -> None:
    good = Verifier([key.public_key()], expected_topic="emotion-agent/+/stats", max_skew_s=None)
    assert good.check(encode(_msg(signer))).topic_checked
    bad = Verifier([key.public_key()], expected_topic="emotion-agent/lobby-2/#", max_skew_s=None)
    assert bad.check(encode(_msg(signer))).reason == (
        "signed for topic 'emotion-agent/lobby-1/stats', which is not 'emotion-agent/lobby-2/#'"
    )


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/b", "a/c", False),
        ("a/b", "a/b/c", False),
        ("#", "x/y", True),
        ("#", "$SYS/broker/load", False),
        ("+/broker/load", "$SYS/broker/load", False),
        ("$SYS/#", "$SYS/broker/load", True),
        ("$SYS/+/load", "$SYS/broker/load", True),
        ("a/#", "a/$b", True),
        ("+/+", "a/", True),
        ("+", "/", False),
        ("+/+", "/", True),
        ("a/+/c", "a//c", True),
    ],
)
def test_topic_filters_match_like_mqtt(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


TOPICS = ["a", "a/b", "a/b/c", "a/", "/", "/a", "a//c", "$SYS/x", "$SYS", "$share/g/a", "x/$y"]
FILTERS = ["#", "+", "+/+", "+/#", "a/#", "a/+", "a/+/c", "/+", "+/", "$SYS/#", "$SYS/+", "$SYS", "x/+"]


def test_the_matcher_agrees_with_paho_on_every_filter_and_topic_pair() -> None:
    """paho's own matcher (``topic_matches_sub``) is the reference; ours stays paho-free."""
    from paho.mqtt.client import topic_matches_sub  # noqa: PLC0415 - the reference, in tests only

    differ = [
        (f, t, topic_matches(f, t))
        for f in FILTERS
        for t in TOPICS
        if topic_matches(f, t) != topic_matches_sub(f, t)
    ]
    assert differ == []


def test_timestamp_too_far_ahead_or_too_old_is_rejected(
    key: Ed25519PrivateKey, signer: Signer, clock: FakeClock
) -> None:
    clock.advance(301)
    ahead = encode(_msg(signer))
    verifier = Verifier([key.public_key()], clock=FakeClock())
    assert verifier.check(ahead).reason == (
        "ts 1700000301000 is 301.000 s ahead of the reference time 1700000000000 (max skew 300 s)"
    )
    later = FakeClock(1_700_000_000.0 + 301 + 3600.5)
    strict = Verifier([key.public_key()], max_age_s=3600, clock=later)
    assert strict.check(ahead).reason == (
        "ts 1700000301000 is 3600.500 s older than the reference time 1700003901500 (max age 3600 s)"
    )
    assert Verifier([key.public_key()], clock=later).check(ahead).ok  # age unbounded by default


def test_arrival_time_of_a_wrapper_is_the_skew_reference(key: Ed25519PrivateKey, signer: Signer) -> None:
    payload = _msg(signer)
    verifier = Verifier([key.public_key()], clock=FakeClock(2_000_000_000.0))
    tst = {"topic": TOPIC, "payload": payload, "tst": "2023-11-14T22:08:20.000000+0000"}
    assert verifier.check_line(json.dumps(tst)).ok
    early = {"topic": TOPIC, "payload": _msg(signer), "received_ms": 1_699_999_000_000}
    assert verifier.check_line(json.dumps(early)).reason.startswith("ts 1700000000000 is 1000.000 s ahead")


def test_one_key_speaking_for_two_devices_is_rejected(key: Ed25519PrivateKey, verifier: Verifier) -> None:
    one = Signer("lobby-1", key, store=MemorySequenceStore(), clock=FakeClock())
    two = Signer("lobby-2", key, store=MemorySequenceStore(), clock=FakeClock())
    assert verifier.check(encode(_msg(one))).ok
    assert verifier.check(encode(_msg(two))).reason == (
        f"kid {kid_for(key.public_key())} belongs to device 'lobby-1', not 'lobby-2'"
    )
    pinned = Verifier([key.public_key()], device="lobby-2", clock=FakeClock())
    assert pinned.check(encode(_msg(one))).reason == "dev 'lobby-1' is not the expected device 'lobby-2'"


def test_key_rotation_trusts_the_new_key_only_after_the_announcement(
    key: Ed25519PrivateKey, signer: Signer, verifier: Verifier
) -> None:
    new = Ed25519PrivateKey.generate()
    early = Signer("lobby-1", new, store=MemorySequenceStore(first_seq=900), clock=FakeClock())
    assert verifier.check(encode(_msg(early))).reason.startswith(f"unknown kid {kid_for(new.public_key())}")
    announce = verifier.check(encode(signer.rotate(new, "emotion-agent/lobby-1/keys")))
    assert announce.notes == (
        f"key {kid_for(new.public_key())} announced by {kid_for(key.public_key())} "
        "is now trusted for device lobby-1",
    )
    after = verifier.check(encode(_msg(signer)))
    assert (after.ok, after.envelope and after.envelope["kid"]) == (True, kid_for(new.public_key()))


def test_rotation_signed_by_an_untrusted_key_is_rejected(verifier: Verifier) -> None:
    rogue = Signer("lobby-1", Ed25519PrivateKey.generate(), store=MemorySequenceStore(), clock=FakeClock())
    forged = rogue.rotate(Ed25519PrivateKey.generate(), "emotion-agent/lobby-1/keys")
    assert verifier.check(encode(forged)).reason.startswith(f"unknown kid {forged['kid']}")


def test_rotation_with_a_bad_body_is_rejected(signer: Signer, verifier: Verifier) -> None:
    env = signer.sign("key-rotation", "emotion-agent/lobby-1/keys", {"new_key": {"kty": "RSA"}})
    assert verifier.check(encode(env)).reason == (
        "key-rotation: body.new_key: JWK has kty='RSA' crv=None; expected OKP / Ed25519"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not valid JSON: Expecting value at column 1"),
        ('{"a": 1.5}', "number 1.5 is not an integer; signed messages carry integers only"),
        ('{"a": 1e3}', "number 1e3 is not an integer"),
        ('{"a": 1.0}', "number 1.0 is not an integer"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a' in an object (RFC 8785 needs I-JSON)"),
        ('{"a": 9007199254740992}', "message.a: integer 9007199254740992 is outside ±(2**53 - 1)"),
        ('{"a": "\\ud800"}', "message.a: string holds a lone surrogate"),
        ("[1, 2]", "a line must be a JSON object"),
        ('{"topic": 5, "payload": {}}', "a {\"topic\", \"payload\"} line needs 'topic' as a string"),
        ('{"topic": "t", "payload": 5}', "'payload' must be the envelope object or its JSON text"),
        (b"\xff{}", "not UTF-8 text (byte 0)"),
    ],
)
def test_malformed_lines_are_explained(verifier: Verifier, line: str | bytes, reason: str) -> None:
    result = verifier.check_line(line)
    assert result.status == "malformed"
    assert result.reason.startswith(reason)


@settings(max_examples=60, deadline=None)
@given(order=st.lists(st.integers(0, 19), min_size=1, max_size=40))
def test_any_delivery_order_accepts_each_seq_once_and_only_growing(order: list[int]) -> None:
    """Duplicated, dropped and shuffled deliveries: accepted seqs strictly grow, none twice,
    every refusal is a replay or an out-of-order message, and gaps count every skipped seq."""
    key = Ed25519PrivateKey.generate()
    signer = Signer("lobby-1", key, store=MemorySequenceStore(), clock=FakeClock())
    sent = [encode(signer.sign("stats", TOPIC, {"i": i})) for i in range(20)]
    verifier = Verifier([key.public_key()], clock=FakeClock())
    accepted, missing = [], 0
    for i in order:
        result = verifier.check(sent[i])
        if result.ok:
            accepted.append(i + 1)
            missing += sum(gap.missing for gap in result.gaps)
        else:
            assert result.reason.startswith(("replay: ", "out of order: ")), result.reason
    assert accepted == sorted(set(accepted))
    assert accepted[0] == order[0] + 1
    assert missing == accepted[-1] - accepted[0] + 1 - len(accepted), "gaps count every skipped seq"


def test_a_retained_copy_of_a_rotated_in_key_is_checked_again_after_the_notice(
    key: Ed25519PrivateKey, signer: Signer, verifier: Verifier
) -> None:
    """Retained messages come in topic order: `key` (signed by the new key) before
    `key-rotation` (signed by the old one, announcing it). Issue 14 item 4."""
    new = Ed25519PrivateKey.generate()
    base = "emotion-agent/lobby-1"
    notice = signer.rotate(new, f"{base}/key-rotation")
    announced = signer.sign("key", f"{base}/key", {"kid": kid_for(new.public_key())})
    assert announced["kid"] == kid_for(new.public_key())

    def line(env: dict[str, Any], retain: int) -> str:
        return json.dumps({"topic": env["topic"], "payload": encode(env).decode(), "retain": retain})

    results = list(verify_stream([line(announced, 1), line(notice, 1)], verifier))
    assert [(n, r.status) for n, r in results] == [(2, "ok"), (1, "ok")]
    live = Verifier([key.public_key()], clock=FakeClock())
    (first, _) = list(verify_stream([line(announced, 0), line(notice, 0)], live))
    assert first[1].status == "rejected"  # live messages are judged in arrival order
