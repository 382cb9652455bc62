"""A full disk under the audit log: no partial line or note, nothing raised, entries wait in
memory and are written (after an entry saying so) once there is space (issue 18 item 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.entries import decode_entry
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.errors import StorageError
from tests.faults import FullDisk

from .conftest import OpenLog
from .helpers import frames

T0 = 1_700_000_000_000


def lines(audit: Path) -> list[bytes]:
    return [x for p in sorted(audit.glob("segment-*.jsonl")) for x in p.read_bytes().splitlines()]


def test_entries_wait_in_memory_and_are_written_with_a_note_once_there_is_space(
    open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = FullDisk(monkeypatch)
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    log.append("frames", frames())
    before = (tmp_path / "audit/segment-000000000000.jsonl").read_bytes()
    disk.left = 40  # room for a part of the next line only
    with caplog.at_level(logging.ERROR):
        assert log.append("frames", frames(window_start_ms=T0 + 1)) == -1
        assert log.append("frames", frames(window_start_ms=T0 + 2)) == -1
    assert (tmp_path / "audit/segment-000000000000.jsonl").read_bytes() == before  # no partial line
    assert log.held == 2
    assert log.write_error == "No space left on device"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # said once, one line
    assert "No space left on device" in errors[0]
    assert all(r.exc_info is None for r in caplog.records)
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []
    disk.free()
    assert log.append("frames", frames(window_start_ms=T0 + 3)) >= 0
    assert log.held == 0
    assert log.write_error is None
    entries = [decode_entry(x) for x in lines(tmp_path / "audit")]
    delayed = entries[-4]
    assert (delayed.kind, delayed.data["code"]) == ("error", "audit_delayed")
    assert "2 audit entries waited in memory (0 dropped)" in delayed.data["message"]
    assert [e.data["window_start_ms"] - T0 for e in entries[-3:]] == [1, 2, 3]
    log.close()
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems == []
    assert result.warnings == []


def test_a_checkpoint_the_disk_refuses_leaves_no_half_note_and_is_signed_later(
    open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    log.append("frames", frames())
    disk.left = 30
    assert log.checkpoint() is None
    assert (tmp_path / "audit/checkpoints.log").read_bytes() == b""
    disk.free()
    assert log.checkpoint() is not None
    log.close()
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


def test_a_rotation_the_disk_refuses_is_tried_again(
    open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk = FullDisk(monkeypatch)
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=10)
    for _ in range(9):
        log.append("frames", frames())
    disk.fill()
    assert log.append("frames", frames(window_start_ms=T0 + 7)) == -1  # the rotation itself needs the disk
    assert sorted(p.name for p in (tmp_path / "audit").glob("segment-*")) == ["segment-000000000000.jsonl"]
    disk.free()
    log.append("frames", frames(window_start_ms=T0 + 8))
    log.close()
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems == []
    marks = [decode_entry(x).data.get("window_start_ms", 0) - T0 for x in lines(tmp_path / "audit")]
    assert marks[-2:] == [7, 8]


def test_close_on_a_full_disk_says_what_was_lost_in_one_line(
    open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = FullDisk(monkeypatch)
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000)
    log.append("frames", frames())
    disk.fill()
    log.append("stop", {"reason": "sigterm", "uptime_ms": 5})
    with caplog.at_level(logging.ERROR):
        log.close()  # no exception
    assert any("1 entries could not be written before stopping" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)
    assert verify_log(tmp_path / "audit", key.public_key()).problems == []


def test_a_disk_full_before_the_start_is_one_line_exit_1_not_a_traceback(
    open_log: OpenLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_log().close()
    FullDisk(monkeypatch, left=0)
    with pytest.raises(StorageError, match="cannot open the audit log: No space left on device") as info:
        open_log()
    assert info.value.exit_code == 1
    assert "\n" not in str(info.value)


def test_waits_for_disk_says_whether_maybe_checkpoint_has_something_to_write(
    open_log: OpenLog, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service signs in a turn of its own while this is true (every turn waits for a pace
    point then): true while entries wait in memory or a due checkpoint was refused, false again
    once they are written; a checkpoint asked for, refused and not due by then is not retried,
    so it must not keep the loop waiting (found by review: 10 minutes after the disk was freed)."""
    disk = FullDisk(monkeypatch)
    log = open_log(checkpoint_every_entries=1000, segment_max_entries=1000, checkpoint_every_minutes=10)
    log.append("frames", frames())
    assert not log.waits_for_disk
    disk.fill()
    assert log.append("frames", frames(window_start_ms=T0 + 1)) == -1
    assert log.waits_for_disk  # an entry waits in memory
    disk.free()
    log.maybe_checkpoint()
    assert log.held == 0
    assert not log.waits_for_disk
    disk.fill()
    assert log.checkpoint() is None  # asked for (a command), refused
    disk.free()
    assert not log.waits_for_disk  # nothing would write it before one is due
    assert log.maybe_checkpoint() is None
    clock.advance(601)
    disk.fill()
    assert log.maybe_checkpoint() is None  # due by time, refused
    assert log.waits_for_disk
    disk.free()
    assert log.maybe_checkpoint() is not None
    assert not log.waits_for_disk
    log.close()
