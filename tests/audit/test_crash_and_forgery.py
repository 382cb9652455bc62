"""Power loss, a changed setting between runs, forged purges and hostile lines: a genuine log
verifies and lets the agent start, a tampered one does not, and no line crashes the verifier."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.entries import decode_entry, encode_entry
from agent.audit.store import segment_name
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.crypto.seqstore import FileSequenceStore
from agent.state_check import check_state_dir

from .conftest import OpenLog
from .helpers import ORIGIN, fill, frames


def _closed_log(open_log: OpenLog, clock: FakeClock, tmp_path: Path) -> tuple[Path, int]:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    fill(log, clock, 4)
    size = log.size
    log.close()
    return tmp_path / "audit", size


def test_a_rotation_cut_short_by_power_loss_verifies_and_lets_the_agent_start(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """docs/audit-log.md: a crash can leave 'a new segment file without its first line'
    (_start_segment creates the file and fsyncs the folder before writing the line)."""
    audit, size = _closed_log(open_log, clock, tmp_path)
    (audit / segment_name(size)).touch(mode=0o600)  # created, fsynced, then the power went
    (tmp_path / "signer-state.json").write_text('{"boot": 1, "seq_reserved": 257}\n')
    result = verify_log(audit, key.public_key())  # was: KeyError in _overdue
    assert result.problems == []
    check_state_dir(tmp_path, key.public_key())  # the agent's start check runs the same verifier


def test_a_purge_record_in_the_unsigned_tail_cannot_excuse_deleting_signed_segments(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Someone with the files but not the key deletes the oldest (checkpointed) segments and
    appends, after the last checkpoint, a purge entry that 'records' their removal."""
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    fill(log, clock, 10)  # several segments, every one covered by checkpoints
    log.close()
    audit = tmp_path / "audit"
    segments = sorted(audit.glob("segment-*.jsonl"))
    kept_first = int(segments[2].name[8:20])
    for path in segments[:2]:
        path.unlink()  # entries 0..kept_first-1 are gone; no purge ever happened
    last = segments[-1]
    size = sum(len(p.read_bytes().splitlines()) for p in sorted(audit.glob("segment-*.jsonl"))) + kept_first
    now = decode_entry(last.read_bytes().splitlines()[-1]).ts_ms + 1000
    forged = encode_entry(size, now, "purge", {
        "segments": [{"name": segment_name(0), "first": 0, "count": kept_first, "last_ts_ms": 1,
                      "root": "A" * 43 + "="}],
        "first_kept": kept_first,
        "root_at_first_kept": "A" * 43 + "=",
        "retention_days": 365,
        "cutoff_ms": now - 366 * 86_400_000,
    })
    with last.open("ab") as f:
        f.write(forged.line + b"\n")
    result = verify_log(audit, key.public_key())
    assert not result.ok, result.warnings  # was: OK, with only warnings


def test_a_new_run_that_continues_the_last_segment_is_not_held_to_the_old_runs_n(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    """A run that stops right after open (e.g. a model failed to load) leaves a segment of one
    entry; the next run continues it (no rotation) with its own checkpoint_every, but the
    segment entry still records the old N, so the genuine log then fails `audit verify`
    ('a checkpoint was deleted') and check_state_dir refuses the next start."""
    audit = tmp_path / "audit"
    AuditLog.open(audit, key, ORIGIN, clock, AuditConfig(checkpoint_every_entries=10)).close()
    log = AuditLog.open(audit, key, ORIGIN, clock, AuditConfig(checkpoint_every_entries=100))
    fill(log, clock, 4)  # 13 entries, all within the first 10 minutes
    log.close()
    result = verify_log(audit, key.public_key())
    assert result.problems == []


def test_the_signer_floor_keeps_the_boot_after_the_start_entry_was_purged(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """A device that has run longer than audit_days since its last start: the `start` entry
    (boot 3) is purged, but the first kept segment entry still carries it. If signer-state.json
    is then lost, the floor must still be boot 3, or the next boot reuses boot 1."""
    log = open_log(retention_days=365, checkpoint_every_entries=5)
    fill(log, clock, 8)  # start entry with boot 3
    clock.advance(366 * 86_400)
    log.append("frames", frames())  # a new UTC day: a new segment, carrying start (boot 3)
    log.append("publish", {"topic": "emotion-agent/lobby-1/stats", "seq": 5000, "payload_sha256": "ab" * 32})
    assert log.purge() is not None
    log.close()
    (tmp_path / "spool.sqlite3").touch()  # an earlier run; signer-state.json was lost
    floor = check_state_dir(tmp_path, key.public_key()).floor
    store = FileSequenceStore(tmp_path, floor=floor)
    try:
        assert store.boot > 3, (floor, store.boot)
    finally:
        store.close()


def test_audit_verify_gives_a_verdict_not_a_traceback_on_hostile_lines(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """decode_entry catches only UnicodeDecodeError/JSONDecodeError; json.loads also raises
    ValueError (an integer of more than 4300 digits) and RecursionError (deep nesting)."""
    audit, _ = _closed_log(open_log, clock, tmp_path)
    last = sorted(audit.glob("segment-*.jsonl"))[-1]
    original = last.read_bytes()
    for hostile in (b'{"data":{},"i":' + b"1" * 5000 + b',"kind":"stop","ts":0}', b"[" * 100_000):
        last.write_bytes(original + hostile + b"\n")
        try:
            result = verify_log(audit, key.public_key())
        except (ValueError, RecursionError) as exc:
            pytest.fail(f"audit verify crashed: {type(exc).__name__}: {str(exc)[:60]}")
        assert not result.ok


def test_a_genuine_purge_is_covered_by_a_checkpoint_before_its_segments_go(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The verifier accepts missing oldest entries only with a purge entry a signed checkpoint
    covers; the log signs one right after the purge entry, so a power cut just after a purge
    (no close, no later checkpoint) still leaves a log that verifies."""
    log = open_log(retention_days=365, checkpoint_every_entries=1000, segment_max_entries=10)
    fill(log, clock, 12)
    clock.advance(366 * 86_400)
    log.append("frames", frames())
    assert log.purge() is not None
    result = verify_log(tmp_path / "audit", key.public_key())  # the log is still open: no close
    log.close()
    assert result.problems == []
