"""The audit log: strict entries, checkpoints on schedule, rotation, purge and crash recovery."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit.entries import decode_entry
from agent.audit.merkle import leaf_hash, root_of
from agent.audit.note import open_checkpoint, split_notes
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.errors import PayloadError

from .conftest import OpenLog
from .helpers import HASH, ORIGIN, fill, frames, start, window


def all_lines(audit: Path) -> list[bytes]:
    out: list[bytes] = []
    for seg in sorted(audit.glob("segment-*.jsonl")):
        out += seg.read_bytes().splitlines()
    return out


def notes(audit: Path, key: Ed25519PrivateKey) -> list[int]:
    found, tail = split_notes((audit / "checkpoints.log").read_bytes())
    assert tail == b""
    return [open_checkpoint(n, key.public_key()).size for _, n in found]


def test_append_writes_canonical_lines_whose_tree_root_the_log_reports(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path
) -> None:
    log = open_log()
    fill(log, clock, 4)
    lines = all_lines(tmp_path / "audit")
    assert [decode_entry(line).index for line in lines] == list(range(len(lines)))
    assert log.root() == root_of([leaf_hash(line) for line in lines])
    assert b" " not in lines[1]
    assert b'"kind":"start"' in lines[1]
    log.close()


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("selfie", {}, "unknown audit entry kind 'selfie'"),
        ("window", window(boxes=[[0.1, 0.2, 0.3, 0.4]]), "field 'boxes' is not allowed"),
        ("frames", frames(pixels=[[[0, 0, 255]]]), "field 'pixels' is not allowed"),
        ("window", window(track_id="t-17"), "field 'track_id' is not allowed"),
        ("frames", frames(lifetime_max_ms=12.5), "field 'lifetime_max_ms'"),
        ("frames", frames(captured=2**53), "field 'captured'"),
        ("window", window(published=1), "field 'published'"),
        ("window", {"people": 3}, "required field 'window_start_ms' is missing"),
        ("purge", {}, "written by the log itself"),
        ("segment", {}, "written by the log itself"),
        ("error", {"code": "x", "message": "y" * 501}, "field 'message'"),
    ],
)
def test_append_refuses_unknown_kinds_pixels_boxes_ids_and_floats(
    open_log: OpenLog, kind: str, fields: dict[str, object], message: str
) -> None:
    log = open_log()
    before = log.size
    with pytest.raises(PayloadError, match=message):
        log.append(kind, fields)
    assert log.size == before
    log.close()


def test_checkpoints_every_n_entries_and_at_close(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=1000)
    seen: list[bytes] = []
    log.on_checkpoint = seen.append
    for _ in range(12):
        log.append("frames", frames())
    log.append("stop", {"reason": "shutdown", "uptime_ms": 5})
    log.close()
    sizes = notes(tmp_path / "audit", key)
    assert sizes == [5, 10, 14]  # the segment entry is entry 0
    assert [open_checkpoint(n, key.public_key()).size for n in seen] == sizes


def test_checkpoint_every_t_minutes_even_below_n(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=1000, checkpoint_every_minutes=10, segment_max_entries=1000)
    log.append("frames", frames())
    assert log.maybe_checkpoint() is None
    clock.advance(9 * 60)
    log.append("frames", frames())
    assert notes(tmp_path / "audit", key) == []
    clock.advance(61)
    log.append("frames", frames())
    assert notes(tmp_path / "audit", key) == [4]
    log.close()


def test_a_failing_checkpoint_callback_does_not_stop_the_log(open_log: OpenLog) -> None:
    log = open_log(checkpoint_every_entries=2)

    def broken(_: bytes) -> None:
        raise ConnectionError("broker down")

    log.on_checkpoint = broken
    for _ in range(5):
        log.append("frames", frames())
    assert log.size == 6
    log.close()


def test_segments_rotate_by_count_and_by_utc_day_each_opening_with_the_right_edge(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path
) -> None:
    log = open_log(segment_max_entries=10)
    for _ in range(12):
        log.append("frames", frames())
    clock.advance(86_400)
    log.append("frames", frames())
    log.close()
    names = sorted(p.name for p in (tmp_path / "audit").glob("segment-*.jsonl"))
    assert names == ["segment-000000000000.jsonl", "segment-000000000010.jsonl", "segment-000000000014.jsonl"]
    lines = all_lines(tmp_path / "audit")
    second = decode_entry((tmp_path / "audit" / names[1]).read_bytes().splitlines()[0])
    assert second.kind == "segment"
    assert second.data["previous"] == names[0]
    assert len(second.data["edge"]) == bin(10).count("1")
    third = decode_entry((tmp_path / "audit" / names[2]).read_bytes().splitlines()[0])
    assert third.index == 14
    assert len(lines) == 16


def test_reopening_continues_the_same_tree(open_log: OpenLog, clock: FakeClock, tmp_path: Path) -> None:
    log = open_log()
    fill(log, clock, 3)
    log.close()
    log = open_log()
    log.append("start", start())
    assert log.root() == root_of([leaf_hash(line) for line in all_lines(tmp_path / "audit")])
    log.close()


def test_purge_removes_only_segments_past_retention_and_records_them(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path
) -> None:
    log = open_log(segment_max_entries=10, retention_days=30)
    for _ in range(25):
        log.append("frames", frames())
    old_lines = all_lines(tmp_path / "audit")
    assert log.purge() is None  # nothing is 30 days old yet
    clock.advance(31 * 86_400)
    record = log.purge()
    assert record is not None
    purged = [s["name"] for s in record["segments"]]
    assert purged == ["segment-000000000000.jsonl", "segment-000000000010.jsonl"]
    assert record["first_kept"] == 20
    assert record["segments"][0]["root"] == _b64(root_of([leaf_hash(x) for x in old_lines[:10]]))
    assert record["root_at_first_kept"] == _b64(root_of([leaf_hash(x) for x in old_lines[:20]]))
    assert not (tmp_path / "audit/segment-000000000000.jsonl").exists()
    last = decode_entry(all_lines(tmp_path / "audit")[-1])
    assert last.kind == "purge"
    assert last.data == record
    log.close()


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def test_reopen_after_a_cut_line_truncates_it_and_records_an_error(open_log: OpenLog, tmp_path: Path) -> None:
    log = open_log(segment_max_entries=1000)
    for _ in range(3):
        log.append("frames", frames())
    log.close()
    seg = tmp_path / "audit/segment-000000000000.jsonl"
    with seg.open("ab") as f:
        f.write(b'{"data":{"analysed":2')
    log = open_log(segment_max_entries=1000)
    assert log.size == 6  # 4 kept, then this run's own segment (entry 4) and the error entry (5)
    assert len(seg.read_bytes().splitlines()) == 4
    entry = decode_entry((tmp_path / "audit/segment-000000000004.jsonl").read_bytes().splitlines()[-1])
    assert entry.kind == "error"
    assert entry.data["code"] == "partial_entry_discarded"
    assert "21 bytes" in entry.data["message"]
    log.close()


def test_reopen_after_a_crash_between_the_attested_state_and_its_line(
    open_log: OpenLog, tmp_path: Path
) -> None:
    """The state is attested before the line is written: a crash in between leaves the log one
    entry short of the state, which is accepted (the line never existed)."""
    log = open_log(segment_max_entries=1000)
    log.append("frames", frames())
    seg = tmp_path / "audit/segment-000000000000.jsonl"
    kept = seg.read_bytes()
    log.append("publish", {"topic": "t/stats", "seq": 1, "payload_sha256": HASH})
    log._fd, fd = -1, log._fd  # simulate kill -9 after the state update, before the line
    os.close(fd)
    seg.write_bytes(kept)
    assert json.loads((tmp_path / "audit/state.json").read_bytes())["size"] == 3
    log = open_log(segment_max_entries=1000)
    assert log.size == 3  # the two kept entries, then this run's own segment entry
    assert json.loads((tmp_path / "audit/state.json").read_bytes())["size"] == 3
    assert log.root() == root_of([leaf_hash(x) for x in all_lines(tmp_path / "audit")])
    log.close()


def test_checkpoint_note_uses_origin_as_key_name(open_log: OpenLog, key: Ed25519PrivateKey) -> None:
    log = open_log()
    cp = log.checkpoint()
    text = cp.note.decode()
    assert text.startswith(f"{ORIGIN}\n1\n")
    assert f"\n\n— {ORIGIN} " in text
    log.close()


def test_a_callback_that_audits_its_own_publish_neither_loops_nor_leaves_entries_unsigned(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The service publishes each checkpoint and audits that publish: with N = 1 that must not
    recurse, rotation must not re-enter, and close() must leave every entry signed."""
    log = open_log(checkpoint_every_entries=1, segment_max_entries=10)
    published: list[int] = []

    def publish(note: bytes) -> None:
        published.append(open_checkpoint(note, key.public_key()).size)
        log.append("publish", {"topic": "x/audit/checkpoint", "seq": len(published), "payload_sha256": HASH})

    log.on_checkpoint = publish
    for _ in range(25):
        log.append("frames", frames())
    log.close()
    assert published == sorted(set(published))
    assert len(published) >= 25
    sizes = notes(tmp_path / "audit", key)
    total = len(all_lines(tmp_path / "audit"))
    assert sizes[-1] == total  # the last checkpoint on disk covers the last publish record
    assert published[-1] < total  # the last published one cannot cover its own publish record
    result = verify_log(tmp_path / "audit", key.public_key())
    assert result.problems == []
    assert result.warnings == []
