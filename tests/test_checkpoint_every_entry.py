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


def test_entries_held_through_a_full_disk_are_counted_when_a_checkpoint_record_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of a checkpoint's message is the one entry left out of N, not the entries
    that waited for the disk and are written ahead of it (found by review: counted as the
    record's, they let 7 entries pass without a checkpoint at N = 3 and ``audit verify`` said a
    checkpoint was deleted)."""
    key = Ed25519PrivateKey.generate()
    clock = FakeClock(start=1_800_000_000.0)
    log = AuditLog.open(tmp_path / "audit", key, BASE, clock, AuditConfig(checkpoint_every_entries=3))
    disk = FullDisk(monkeypatch)
    assert log.checkpoint() is not None
    disk.fill()
    for i in range(6):
        assert log.append("error", {"code": "camera_failed", "message": f"lost {i}"}) == -1
    disk.free()
    record = {"topic": f"{BASE}/audit/checkpoint", "seq": 1, "payload_sha256": "0" * 64}
    log.append("publish", record)  # the publisher's record of a checkpoint message: flushes the six
    log.append("error", {"code": "camera_failed", "message": "after"})
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []
