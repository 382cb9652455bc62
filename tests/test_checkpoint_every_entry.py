"""``audit.checkpoint_every_entries: 1`` (the schema allows it) must not sign forever.

Found while testing the window's page trims: with it, ``run`` never got past its start. The
service audits each message it publishes, and publishes each checkpoint; the publisher hands a
message on and records it after the checkpoint's own delivery has returned, so each
checkpoint's ``publish`` entry was one new entry, which made the next checkpoint due: 5,009
messages written in the first seconds and no frame read. The record of a checkpoint's message
(``records_a_checkpoint``, the rule ``audit verify`` counts by) now makes no checkpoint due and
is not counted towards N; the next entry of anything else makes one due, which covers it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditLog
from agent.audit.settings import AuditConfig
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.crypto import MemorySequenceStore, Signer
from agent.outputs.base import Message
from agent.publisher import Publisher
from tests.faults import FullDisk

BASE = "emotion-agent/lobby-1"
RUNAWAY = 200


class Counting:
    """An output that stops the runaway instead of filling the disk."""

    def __init__(self) -> None:
        self.topics: list[str] = []

    def start(self) -> None:
        pass

    def send(self, message: Message) -> None:
        self.topics.append(message.topic)
        if len(self.topics) > RUNAWAY:
            raise SystemExit(f"{RUNAWAY} messages for 3 windows: checkpoints sign each other's records")

    def stop(self, timeout: float = 0.0) -> None:
        pass


def test_every_entry_checkpointed_without_a_runaway(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    clock = FakeClock(start=1_800_000_000.0)
    audit = AuditLog.open(tmp_path / "audit", key, BASE, clock, AuditConfig(checkpoint_every_entries=1))
    out = Counting()
    signer = Signer("lobby-1", key, store=MemorySequenceStore(), clock=clock)
    publisher = Publisher(signer, [out], BASE, audit)
    audit.on_checkpoint = lambda note: publisher.publish(  # as Service._publish_checkpoint
        "audit/checkpoint", {"note_bytes": len(note)}, retain=True
    )
    try:
        for window in range(3):
            publisher.publish("stats", {"window": window})
            clock.advance(60.0)
            audit.maybe_checkpoint()  # every loop turn of the service asks
        sent = list(out.topics)
    finally:
        audit.close()
    checkpoints = [t for t in sent if t.endswith("/audit/checkpoint")]
    assert [t.rsplit("/", 1)[-1] for t in sent if not t.endswith("/audit/checkpoint")] == ["stats"] * 3
    assert len(checkpoints) == 3, sent  # one per window: its stats record made it due
    assert len(out.topics) == len(sent) + 1  # at close, one more covers the last checkpoint's record


RECORD = {"topic": f"{BASE}/audit/checkpoint", "seq": 1, "payload_sha256": "0" * 64}


def test_entries_held_through_a_full_disk_and_written_inside_the_callback_make_a_checkpoint_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of a checkpoint's message is the one entry left out of N; the entries that
    waited for the disk and are written ahead of it, inside the checkpoint callback, count and
    make the next checkpoint due (found by review: inside the callback nothing made one due, 7
    entries followed a checkpoint at N = 3, and ``audit verify`` said one was deleted)."""
    key = Ed25519PrivateKey.generate()
    clock = FakeClock(start=1_800_000_000.0)
    log = AuditLog.open(tmp_path / "audit", key, BASE, clock, AuditConfig(checkpoint_every_entries=3))
    log.on_checkpoint = lambda note: log.append("publish", RECORD)  # as the publisher records it
    disk = FullDisk(monkeypatch)
    assert log.checkpoint() is not None
    disk.fill()
    for i in range(6):
        assert log.append("error", {"code": "camera_failed", "message": f"lost {i}"}) == -1
    disk.free()
    log.checkpoint()  # the MQTT "checkpoint" command: its record is the first write the disk takes
    log.append("error", {"code": "camera_failed", "message": "after"})
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


class Refusing(Counting):
    """An output that refuses while ``down`` (a full disk under the JSONL file)."""

    down = False

    def send(self, message: Message) -> None:
        if self.down:
            raise OSError(28, "No space left on device")
        super().send(message)


def test_waiting_messages_recorded_inside_the_checkpoint_callback_make_a_checkpoint_due(
    tmp_path: Path,
) -> None:
    """Six messages wait for an output; a checkpoint due by time is published from the callback
    and hands them on first: their six records count (found by review, as above)."""
    key = Ed25519PrivateKey.generate()
    clock = FakeClock(start=1_800_000_000.0)
    log = AuditLog.open(tmp_path / "audit", key, BASE, clock, AuditConfig(checkpoint_every_entries=3))
    out = Refusing()
    publisher = Publisher(Signer("lobby-1", key, store=MemorySequenceStore(), clock=clock), [out], BASE, log)
    log.on_checkpoint = lambda note: publisher.publish("audit/checkpoint", {"n": len(note)}, retain=True)
    log.checkpoint()
    out.down = True
    for window in range(6):
        publisher.publish("stats", {"window": window})
    out.down = False
    log.append("privacy_mode", {"mode": "on", "source": "signal"})
    clock.advance(700.0)  # past checkpoint_every_minutes: the next entry signs one
    log.append("privacy_mode", {"mode": "off", "source": "signal"})
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


def test_no_checkpoint_is_due_while_the_disk_refuses_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due, it is signed between two trims of library pages (``Service._checkpoint_if_due``):
    while the disk refuses it, that was two trims on every loop turn (found by review)."""
    clock = FakeClock(start=1_800_000_000.0)
    log = AuditLog.open(
        tmp_path / "audit", Ed25519PrivateKey.generate(), BASE, clock,
        AuditConfig(checkpoint_every_entries=1000, checkpoint_every_minutes=1),
    )
    log.append("error", {"code": "camera_failed", "message": "x"})
    clock.advance(120.0)
    assert log.checkpoint_due()  # by time
    disk = FullDisk(monkeypatch)
    disk.fill()
    assert log.maybe_checkpoint() is None  # refused
    assert not log.checkpoint_due()
    disk.free()
    assert log.maybe_checkpoint() is not None
    log.append("error", {"code": "camera_failed", "message": "y"})
    clock.advance(120.0)
    assert log.checkpoint_due()  # again once one was written (found by review: the disk error stayed)
    log.close()
