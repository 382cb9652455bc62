"""A key rotation recorded in the audit log is followed by `audit verify` from either key, and
only when a checkpoint of the trusted key covers it (issue 14 item 4). Before: a log that spans
a rotation verified only when the auditor was given every key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.entries import encode_entry
from agent.audit.rotation import rotation_fields
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.crypto import kid_for
from agent.errors import PayloadError

from .helpers import ORIGIN, fill


def reopen(tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock) -> AuditLog:
    return AuditLog.open(tmp_path / "audit", key, ORIGIN, clock, AuditConfig(checkpoint_every_entries=10))


def rotated_log(tmp_path: Path, clock: FakeClock, old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> None:
    """What `keys rotate` leaves: entries by the old key, the rotation entry closed by the old key,
    the log reopened and closed by the new key, then a run of the new key."""
    log = reopen(tmp_path, old, clock)
    fill(log, clock, 2)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 120_000})  # the agent stops to rotate
    log.append("key_event", rotation_fields(old.public_key(), new.public_key()))
    log.close()
    reopen(tmp_path, new, clock).close()
    log = reopen(tmp_path, new, clock)
    fill(log, clock, 2)
    log.close()


def test_either_key_alone_verifies_a_log_that_spans_a_rotation(tmp_path: Path, clock: FakeClock) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    rotated_log(tmp_path, clock, old, new)
    link = f"rotation {kid_for(old.public_key())} -> {kid_for(new.public_key())}"
    forward = verify_log(tmp_path / "audit", old.public_key())
    assert forward.problems == []
    assert forward.warnings == []
    assert len(forward.followed) == 1
    assert forward.followed[0].endswith(f"{link} followed forward")
    back = verify_log(tmp_path / "audit", new.public_key())
    assert back.problems == []
    assert back.followed[0].endswith(f"{link} followed back")
    assert {kid_for(k) for k in back.keys} == {kid_for(old.public_key()), kid_for(new.public_key())}


def test_a_rotation_entry_written_after_the_old_keys_last_checkpoint_is_not_followed(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Someone with another key appends a rotation "from" the device key and signs on: the
    device key never signed a tree holding that entry, so its checkpoints stay untrusted."""
    device, intruder = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    log = reopen(tmp_path, device, clock)
    fill(log, clock, 2)
    log.close()
    forged = reopen(tmp_path, intruder, clock)
    forged.append("key_event", rotation_fields(device.public_key(), intruder.public_key()))
    fill(forged, clock, 2)
    forged.close()
    result = verify_log(tmp_path / "audit", device.public_key())
    assert result.followed == []
    assert "checkpoint rejected: no signature by the trusted key" in result.problems[0]


def test_a_rotation_entry_whose_key_is_not_its_kid_is_a_problem(tmp_path: Path, clock: FakeClock) -> None:
    old, new, other = (Ed25519PrivateKey.generate() for _ in range(3))
    fields = rotation_fields(old.public_key(), new.public_key()) | {"kid": kid_for(other.public_key())}
    log = reopen(tmp_path, old, clock)
    index = log.append("key_event", fields)
    log.close()
    result = verify_log(tmp_path / "audit", old.public_key())
    assert result.followed == []
    assert any(
        f"entry {index}: key rotation refused" in p and "the entry names" in p for p in result.problems
    ), result.problems


def test_a_rotation_entry_names_both_keys_and_other_events_none() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    fields = rotation_fields(old.public_key(), new.public_key())
    assert encode_entry(0, 0, "key_event", fields).data == fields
    with pytest.raises(PayloadError, match=r"missing: \['new_key'\]"):
        encode_entry(0, 0, "key_event", {k: v for k, v in fields.items() if k != "new_key"})
    with pytest.raises(PayloadError, match="'new_kid' belongs to a rotation event only"):
        encode_entry(0, 0, "key_event", {"event": "boot", "kid": fields["kid"], "new_kid": fields["new_kid"]})
