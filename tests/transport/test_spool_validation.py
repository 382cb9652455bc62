"""Spooled rows leave only if they are this device's own signed messages; a bad row is
quarantined once instead of blocking the queue (issue 18 item 6)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import FakeClock, SystemClock
from agent.crypto import MemorySequenceStore, Signer, encode, public_jwk
from agent.outputs.base import Message
from agent.transport.mqtt import MqttOutput
from agent.transport.rowcheck import RowCheck
from agent.transport.settings import MqttConfig
from agent.transport.spool import Spool
from agent.transport.spool_types import DropReport, SpoolItem
from tests.mosquitto import Broker, Subscriber, wait_until

BASE = "emotion-agent/lobby-1"


def signed(key: Ed25519PrivateKey, topic: str, device: str = "lobby-1") -> bytes:
    signer = Signer(device, key, store=MemorySequenceStore(), clock=SystemClock())
    return encode(signer.sign("stats", topic, {"people": 5}))


def item(topic: str, payload: bytes) -> SpoolItem:
    return SpoolItem(1, topic, payload, False, 0)


def test_a_row_passes_only_when_signed_by_this_key_for_its_own_topic() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    check = RowCheck(BASE, "lobby-1", key.public_key()).check
    assert check(item(f"{BASE}/stats", signed(key, f"{BASE}/stats"))) is None
    foreign = check(item("emotion-agent/lobby-2/cmd/privacy_mode/set", b"OFF"))
    assert foreign is not None
    assert "not under this device's base topic" in foreign
    wildcard = check(item(f"{BASE}/#", b"x"))
    assert wildcard is not None
    assert "wildcard" in wildcard
    unsigned = check(item(f"{BASE}/stats", b'{"people": 5}'))
    assert unsigned is not None
    assert "not this device's signed message" in unsigned
    by_other = check(item(f"{BASE}/stats", signed(other, f"{BASE}/stats")))
    assert by_other is not None
    assert "unknown kid" in by_other
    moved = check(item(f"{BASE}/alert", signed(key, f"{BASE}/stats")))
    assert moved is not None
    assert "arrived on" in moved


def test_a_row_signed_by_a_key_the_device_rotated_away_from_may_still_leave() -> None:
    """The key-rotation notice (and rows spooled before the rotation) are signed by the old key;
    the service starts with the new one (issue 14 item 4)."""
    old, new, other = (Ed25519PrivateKey.generate() for _ in range(3))
    check = RowCheck(BASE, "lobby-1", new.public_key(), [old.public_key()]).check
    assert check(item(f"{BASE}/key-rotation", signed(old, f"{BASE}/key-rotation"))) is None
    assert check(item(f"{BASE}/stats", signed(new, f"{BASE}/stats"))) is None
    stranger = check(item(f"{BASE}/stats", signed(other, f"{BASE}/stats")))
    assert stranger is not None
    assert "unknown kid" in stranger


def test_without_a_key_only_the_topic_is_checked() -> None:
    check = RowCheck(BASE, "lobby-1", None).check
    assert check(item(f"{BASE}/stats", b"anything")) is None
    assert check(item("elsewhere/stats", b"anything")) is not None


def test_a_row_of_the_wrong_types_is_quarantined_not_returned(tmp_path: Path, clock: FakeClock) -> None:
    drops: list[DropReport] = []
    spool = Spool(tmp_path / "s.sqlite3", clock, max_bytes=10**6, max_age_seconds=86400, on_drop=drops.append)
    db = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    db.execute(
        "INSERT INTO spool (topic, payload, retain, created_ms) VALUES (X'00ff', 'x', 0, 1700000000000)"
    )
    db.close()
    spool.put("t/good", b"ok")
    assert [i.payload for i in spool.pending()] == [b"ok"]
    assert [(d.reason, d.count) for d in drops] == [("quarantined", 1)]
    assert spool.stats().dropped == {"quarantined": 1}
    kept = sqlite3.connect(tmp_path / "s.sqlite3").execute("SELECT reason FROM quarantine").fetchall()
    assert kept == [("topic is bytes, not text",)]


def test_quarantine_keeps_only_the_last_rows(tmp_path: Path, clock: FakeClock) -> None:
    spool = Spool(tmp_path / "s.sqlite3", clock, max_bytes=10**6, max_age_seconds=86400)
    for n in range(105):
        spool.quarantine(spool.put("t/x", b"%d" % n), "test")
        clock.advance(0.001)
    count = sqlite3.connect(tmp_path / "s.sqlite3").execute("SELECT COUNT(*) FROM quarantine").fetchone()
    assert count == (100,)
    assert spool.stats().dropped == {"quarantined": 105}


@pytest.mark.slow
def test_planted_rows_are_quarantined_and_the_queue_keeps_moving(tmp_path: Path) -> None:
    """On an open broker (no ACL to save us): a row naming another device's command topic, a
    row with a wildcard topic (paho refuses it: before, 49 failures in 15 s and nothing more was
    delivered) and an unsigned row are planted in the spool; only the signed row is delivered."""
    key = Ed25519PrivateKey.generate()
    state = tmp_path / "state"
    state.mkdir()
    seed = Spool(state / "spool.sqlite3", SystemClock(), max_bytes=10**6, max_age_seconds=86400)
    seed.put("emotion-agent/lobby-2/cmd/privacy_mode/set", b"OFF")
    seed.put(f"{BASE}/#", b"wildcard")
    seed.put(f"{BASE}/stats", b'{"unsigned": 1}')
    seed.close()
    drops: list[DropReport] = []
    with Broker(tmp_path / "broker", allow_anonymous=True) as broker, Subscriber(broker, ["#"]) as sub:
        cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_max_seconds=1, discovery=False)
        out = MqttOutput(cfg, device_id="lobby-1", state_dir=state, spool_days=7, clock=SystemClock(),
                         on_drop=drops.append, public_key=public_jwk(key.public_key()))
        started = time.monotonic()
        out.start()
        try:
            out.send(Message(f"{BASE}/stats", signed(key, f"{BASE}/stats")))
            sub.wait_for(f"{BASE}/stats", timeout=10)
            wait_until(lambda: out.health().backlog == 0, what="spool emptied")
            took = time.monotonic() - started
        finally:
            out.stop()
    assert sub.on_topic("emotion-agent/lobby-2/cmd/privacy_mode/set") == []
    assert [m.payload for m in sub.on_topic(f"{BASE}/stats")] == [signed_payload(sub)]
    assert [d.reason for d in drops] == ["quarantined"] * 3
    assert took < 10


def signed_payload(sub: Subscriber) -> bytes:
    """The one payload that arrived on stats, checked to be a signed envelope."""
    (message,) = sub.on_topic(f"{BASE}/stats")
    assert b'"sig":' in message.payload
    return message.payload
