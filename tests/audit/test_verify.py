"""`audit verify`: tampering with any entry or checkpoint, rollbacks and forks fail, named."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.entries import Entry, decode_entry, encode_entry
from agent.audit.verify import VerifyResult, summary_lines, verify_log
from agent.clock import FakeClock

from .conftest import OpenLog
from .helpers import HASH, ORIGIN, fill, frames, start, window

SEG0 = "segment-000000000000.jsonl"
SEG1 = "segment-000000000010.jsonl"


@pytest.fixture
def audit(open_log: OpenLog, clock: FakeClock, tmp_path: Path) -> Path:
    """A closed log of 4 segments (36 entries: 4 segment heads, start, 10 minutes of frames,
    window and publish, stop) with checkpoints every 5 entries and at close."""
    log = open_log(checkpoint_every_entries=5, segment_max_entries=10)
    fill(log, clock, 10)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 600_000})
    log.close()
    return tmp_path / "audit"


def check(audit: Path, key: Ed25519PrivateKey, **kw: object) -> VerifyResult:
    return verify_log(audit, key.public_key(), **kw)  # type: ignore[arg-type]


def edit_lines(path: Path, fn: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(fn(lines)))


def test_an_untouched_log_verifies(audit: Path, key: Ed25519PrivateKey) -> None:
    result = check(audit, key)
    assert result.problems == []
    assert result.size == 36
    assert result.warnings == []
    assert result.verified_sizes == {5, 10, 15, 20, 25, 30, 35, 36}


def test_a_changed_value_breaks_the_signed_root_and_names_the_range(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    lines = (audit / SEG1).read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"captured":300' in line)
    assert n == 2  # entry 12, covered first by the checkpoint at size 15
    lines[n] = (
        lines[n].replace(b'"captured":300', b'"captured":301').replace(b'"analysed":290', b'"analysed":291')
    )
    (audit / SEG1).write_bytes(b"".join(lines))
    result = check(audit, key)
    assert not result.ok
    first = result.problems[0]
    assert first.startswith(f"{SEG1} line 5 (entry 14): the tree of entries 0..14 hashes to")
    assert "but checkpoints.log line 11 signed" in first
    assert first.endswith(
        "one of entries 10..14 was changed, inserted, deleted or reordered (entries 0..9 match the "
        "checkpoint at size 10)"
    ), first


def test_a_change_before_the_first_checkpoint_names_the_entries_from_the_first(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    """It said "an entry after the last matching checkpoint" when none had matched: the auditor
    was pointed past the change (found by a new user's trial)."""
    edit_lines(audit / SEG0, lambda ls: [*ls[:2], ls[2].replace(b'"ts":', b'"ts":1', 1), *ls[3:]])
    result = check(audit, key)
    first = result.problems[0]
    assert first.endswith("one of entries 0..4 was changed, inserted, deleted or reordered"), first
    # The header said "entries: 0..4" as if the log held 5: it says reading stopped there.
    assert summary_lines(result)[1].endswith(
        "; reading stopped there, at the first entry that broke the tree"
    ), summary_lines(result)


def test_a_changed_window_below_k_is_named_as_the_first_bad_entry(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    edit_lines(
        audit / SEG0, lambda ls: [*ls[:2], ls[2], ls[3].replace(b'"people":5', b'"people":4'), *ls[4:]]
    )
    first = check(audit, key).problems[0]
    assert first == f"{SEG0} line 4 (entry 3): window published with 4 people, fewer than k = 5"


def test_a_deleted_entry_is_named(audit: Path, key: Ed25519PrivateKey) -> None:
    edit_lines(audit / SEG0, lambda ls: [*ls[:4], *ls[5:]])
    first = check(audit, key).problems[0]
    assert first.startswith(f"{SEG0} line 5 (entry 4): holds entry index 5, expected 4")
    assert "deleted, inserted or reordered" in first


def test_an_inserted_entry_is_named(audit: Path, key: Ed25519PrivateKey) -> None:
    forged = encode_entry(3, 1_700_000_100_000, "window", window()).line + b"\n"
    edit_lines(audit / SEG0, lambda ls: [*ls[:3], forged, *ls[3:]])
    assert (
        check(audit, key).problems[0].startswith(f"{SEG0} line 5 (entry 4): holds entry index 3, expected 4")
    )


def test_an_inserted_entry_renumbered_to_fit_still_fails_on_the_signed_root(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    def insert(ls: list[bytes]) -> list[bytes]:
        """Insert an entry at index 3 and renumber the rest so every index looks right."""
        olds = [decode_entry(line.rstrip(b"\n")) for line in ls[3:]]
        out = [*ls[:3], encode_entry(3, olds[0].ts_ms, "error", {"code": "x", "message": "y"}).line + b"\n"]
        out += [encode_entry(e.index + 1, e.ts_ms, e.kind, e.data).line + b"\n" for e in olds]
        return out[:10]

    edit_lines(audit / SEG0, insert)
    first = check(audit, key).problems[0]
    assert first.startswith(f"{SEG0} line 5 (entry 4): the tree of entries 0..4 hashes to")


def test_reordered_entries_are_named(audit: Path, key: Ed25519PrivateKey) -> None:
    edit_lines(audit / SEG1, lambda ls: [ls[0], ls[2], ls[1], *ls[3:]])
    assert (
        check(audit, key)
        .problems[0]
        .startswith(f"{SEG1} line 2 (entry 11): holds entry index 12, expected 11")
    )


def test_a_truncated_log_is_a_rollback_against_its_own_checkpoints(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    last = sorted(audit.glob("segment-*.jsonl"))[-1]
    edit_lines(last, lambda ls: ls[:-3])
    first = check(audit, key).problems[0]
    assert first == (
        "checkpoints.log line 31: signed a tree of 35 entries but the log holds 33: "
        "entries 33..34 were removed (rolled back or truncated)"
    )


def test_a_deleted_segment_without_a_purge_record_fails(audit: Path, key: Ed25519PrivateKey) -> None:
    (audit / SEG0).unlink()
    assert "entries 0..9 are missing and no purge entry records their removal" in check(audit, key).problems


@pytest.mark.parametrize(("emptied", "removed"), [(SEG0, "0..9"), (SEG1, "10..19")])
def test_an_emptied_segment_is_named_with_the_entries_it_lost(
    audit: Path, key: Ed25519PrivateKey, emptied: str, removed: str
) -> None:
    """An emptied first segment was reported as a policy change in the segment after it."""
    (audit / emptied).write_bytes(b"")
    after = sorted(p.name for p in audit.glob("segment-*.jsonl") if p.name > emptied)[0]
    assert check(audit, key).problems == [
        f"{emptied}: empty (0 bytes) but {after} follows it: entries {removed} were removed"
    ]


def test_a_deleted_middle_segment_fails(audit: Path, key: Ed25519PrivateKey) -> None:
    (audit / SEG1).unlink()
    assert check(audit, key).problems[0] == (
        "segment-000000000020.jsonl line 1 (entry 20): names 'segment-000000000010.jsonl' "
        "as the previous segment, not 'segment-000000000000.jsonl'"
    )


def test_a_changed_checkpoint_fails_its_signature(audit: Path, key: Ed25519PrivateKey) -> None:
    cps = audit / "checkpoints.log"
    text = cps.read_text()
    cps.write_text(text.replace("\n10\n", "\n11\n", 1))
    assert (
        check(audit, key)
        .problems[0]
        .startswith(
            "checkpoints.log line 6: checkpoint rejected: the signature by emotion-agent/lobby-1/audit"
        )
    )


def test_a_checkpoint_signed_by_another_key_is_refused(audit: Path, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    result = check(audit, other)
    rejected = "checkpoints.log line 1: checkpoint rejected: no signature by the trusted key"
    assert result.problems[0].startswith(rejected)
    # Not "the device is running or was stopped without a clean shutdown": its checkpoints are
    # there, and were rejected (with the wrong --pubkey, found by a new user's trial).
    assert result.warnings == [
        "entries 0..35 are covered by no checkpoint that verified: 8 checkpoint(s) were rejected (see below)"
    ], result.warnings


def test_reordered_checkpoints_fail(audit: Path, key: Ed25519PrivateKey) -> None:
    cps = audit / "checkpoints.log"
    whole = cps.read_text().splitlines(keepends=True)  # each note is 5 lines
    chunks = [whole[i : i + 5] for i in range(0, len(whole), 5)]
    chunks[1], chunks[2] = chunks[2], chunks[1]
    cps.write_text("".join("".join(c) for c in chunks))
    assert check(audit, key).problems[0] == (
        "checkpoints.log line 11: checkpoint size 10 is smaller than the one before it "
        "(15, checkpoints.log line 6): the checkpoint log is not append-only"
    )


def test_a_deleted_rotation_checkpoint_fails(audit: Path, key: Ed25519PrivateKey) -> None:
    cps = audit / "checkpoints.log"
    whole = cps.read_text().splitlines(keepends=True)
    chunks = [whole[i : i + 5] for i in range(0, len(whole), 5)]
    kept = [c for c in chunks if c[1] != "10\n"]
    cps.write_text("".join("".join(c) for c in kept))
    problems = check(audit, key).problems
    assert problems[0] == (
        f"{SEG1} line 1 (entry 10): 6 entries since the last checkpoint in checkpoints.log, "
        "but the log signs one at least every 5: a checkpoint was deleted"
    )
    assert problems[1] == (
        f"{SEG1}: the log signs a checkpoint whenever a segment starts, but checkpoints.log "
        "has none at size 10: a checkpoint was deleted"
    )


def test_rolling_back_to_an_older_state_fails_against_a_newer_external_checkpoint(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5)
    fill(log, clock, 3)
    log.checkpoint()
    shutil.copytree(tmp_path / "audit", tmp_path / "old")
    fill(log, clock, 3)
    newer = log.checkpoint()
    log.close()
    external = tmp_path / "retained.note"
    external.write_bytes(newer.note)
    result = check(tmp_path / "old", key, external=[(str(external), newer.note)])
    assert check(tmp_path / "old", key).ok  # alone, the old copy looks fine
    assert result.problems[0] == (
        f"{external} line 1: signed a tree of {newer.size} entries but the log holds 12: "
        f"entries 12..{newer.size - 1} were removed (rolled back or truncated)"
    )


def test_a_fork_is_caught_by_an_external_checkpoint_of_the_same_size(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=100, segment_max_entries=100)
    fill(log, clock, 2)
    log.close()
    shutil.copytree(tmp_path / "audit", tmp_path / "fork-b")
    log = open_log(checkpoint_every_entries=100, segment_max_entries=100)
    log.append("window", window(people=9))
    seen_by_broker = log.checkpoint()
    log.close()
    # the other branch, written with the same key, shows the auditor a different history
    b = AuditLog.open(tmp_path / "fork-b", key, seen_by_broker.origin, clock, AuditConfig())
    b.append("window", window(people=2, published=False, suppressed="below_k"))
    b.close()
    first = check(tmp_path / "fork-b", key, external=[("mqtt-retained", seen_by_broker.note)]).problems[0]
    assert f"mqtt-retained line 1: fork: signs a different root at size {seen_by_broker.size}" in first


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (
            "frames",
            frames(state_image_files=2),
            "2 file(s) in state_dir began with an image or video signature when the window closed "
            "(must be 0)",
        ),
        (
            "frames",
            frames(state_files_scanned=0),
            "the scan of state_dir saw no file (it always sees the audit log): it did not run",
        ),
        ("frames", frames(lifetime_max_ms=1500), "a frame lived 1500 ms, above the bound of 1000 ms"),
        (
            "frames",
            frames(captured=299),
            "frames do not add up: captured 299 + queued before 0 != analysed 290 + dropped 6 + "
            "discarded 4 + queued 0",
        ),
        ("window", window(people=4), "window published with 4 people, fewer than k = 5"),
        ("window", window(k=3, people=4), "window used k = 3, below the policy's min_people 5"),
    ],
)
def test_recorded_invariant_violations_fail_even_when_signed(  # noqa: PLR0917 -- 3 fixtures + 3 cases
    open_log: OpenLog,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    kind: str,
    fields: dict[str, object],
    message: str,
) -> None:
    log = open_log()
    log.append("start", start())
    index = log.append(kind, fields)
    log.close()
    result = check(tmp_path / "audit", key)
    assert result.problems == [f"{SEG0} line {index + 1} (entry {index}): {message}"]


def test_the_lifetime_bound_can_be_set_by_the_auditor(
    open_log: OpenLog, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log()
    log.append("start", start())
    log.append("frames", frames(lifetime_max_ms=300))
    log.close()
    assert check(tmp_path / "audit", key).ok
    assert check(tmp_path / "audit", key, max_lifetime_ms=250).problems == [
        f"{SEG0} line 3 (entry 2): a frame lived 300 ms, above the bound of 250 ms"
    ]


def test_a_purged_log_still_verifies_and_shows_the_purge(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(retention_days=365, checkpoint_every_entries=5)
    fill(log, clock, 8)
    clock.advance(366 * 86_400)
    record = log.purge()
    fill(log, clock, 1)
    log.close()
    assert record is not None
    result = check(tmp_path / "audit", key)
    assert result.problems == []
    assert result.first_index == record["first_kept"]
    assert any("predate the retained entries" in w for w in result.warnings)


def test_a_purge_before_the_retention_period_fails(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(retention_days=30)
    log.append("start", start(policy=start()["policy"] | {"audit_days": 90}))
    for _ in range(12):
        log.append("frames", frames())
    clock.advance(31 * 86_400)
    log.purge()
    log.close()
    problems = check(tmp_path / "audit", key).problems
    assert any("purge used 30 days of retention, less than the policy's 90" in p for p in problems)


def test_a_partial_last_line_is_reported_and_the_rest_verifies(audit: Path, key: Ed25519PrivateKey) -> None:
    last = sorted(audit.glob("segment-*.jsonl"))[-1]
    with last.open("ab") as f:
        f.write(b'{"data":{"code":"x"')
    result = check(audit, key)
    assert result.ok
    assert result.partial is not None
    assert result.partial.endswith(
        "partial last entry (19 bytes, cut short by a crash) ignored; everything before it was checked"
    )


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b"x" * 100, "does not start as an entry does"),
        (b'{"data":{"code":"\x01', "holds a control character"),
        (b'{"data":{"code":"' + b"a" * (1024 * 1024 + 1), "longer than any entry, at most 1048576 bytes"),
    ],
    ids=["junk", "a control byte", "too long"],
)
def test_junk_after_the_last_line_is_not_taken_for_a_crash(
    audit: Path, key: Ed25519PrivateKey, tail: bytes, why: str
) -> None:
    """45 MB of ``x`` appended to a segment gave ``partial last entry (45000000 bytes, cut short by
    a crash) ignored`` and ``OK``, exit 0 (found by a hostile-input probe): a crash leaves the
    start of an entry, never other bytes."""
    last = sorted(audit.glob("segment-*.jsonl"))[-1]
    with last.open("ab") as f:
        f.write(tail)
    result = check(audit, key)
    assert not result.ok
    assert result.problems[0].startswith(f"{last.name} line "), result.problems
    assert f"after the last entry: {len(tail)} bytes that no crash leaves ({why})" in result.problems[0]


@pytest.mark.parametrize(
    "tail", [b"\0" * 4096, b'{"data":{"code":"x' + b"\0" * 4000], ids=["NULs", "an entry, then NULs"]
)
def test_nul_bytes_a_power_loss_leaves_after_the_last_line_are_a_crash_remnant(
    audit: Path, key: Ed25519PrivateKey, tail: bytes
) -> None:
    """A power loss can leave NUL bytes where blocks were allocated but not written (XFS, f2fs,
    SD cards). Taken for junk, they made the device refuse to start (its start verifies the log
    before the log discards a partial tail; found by review)."""
    last = sorted(audit.glob("segment-*.jsonl"))[-1]
    with last.open("ab") as f:
        f.write(tail)
    result = check(audit, key)
    assert result.ok, result.problems
    assert result.partial is not None


def test_publish_entries_keep_only_the_payload_hash(open_log: OpenLog, tmp_path: Path) -> None:
    log = open_log()
    log.append("publish", {"topic": "emotion-agent/lobby-1/stats", "seq": 7, "payload_sha256": HASH})
    log.close()
    text = (tmp_path / "audit" / SEG0).read_text()
    assert f'"payload_sha256":"{HASH}"' in text


def test_a_clock_stepping_back_is_a_warning_not_a_failure(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log()
    log.append("start", start())
    clock._wall -= 30  # NTP steps a Pi's clock back
    log.append("frames", frames())
    log.close()
    result = check(tmp_path / "audit", key)
    assert result.ok
    assert "the device clock went backwards 1 time(s) between entries" in result.warnings


def test_a_signature_respelled_in_non_canonical_base64_is_refused(
    audit: Path, key: Ed25519PrivateKey
) -> None:
    """68 bytes in base64 leave 2 spare bits in the last character: changing them keeps the
    decoded bytes but changes the note, so it must not verify."""
    cps = audit / "checkpoints.log"
    lines = cps.read_text().splitlines(keepends=True)
    sig = lines[4]
    last = sig[-3]  # the character before "=\n"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    respelled = alphabet[alphabet.index(last) ^ 1]
    lines[4] = sig[:-3] + respelled + sig[-2:]
    cps.write_text("".join(lines))
    assert (
        check(audit, key).problems[0].startswith("checkpoints.log line 1: checkpoint rejected: signature of")
    )
    assert "not base64" in check(audit, key).problems[0]


def test_an_overdue_purge_fails(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The device announced a retention; segments kept past it (and the timer's day) fail."""
    log = open_log(segment_max_entries=10)
    fill(log, clock, 4)
    clock.advance(365 * 86_400)  # a new segment starts (a new day) ...
    log.append("stop", {"reason": "shutdown", "uptime_ms": 1})
    on_time = check(tmp_path / "audit", key)
    clock.advance(86_400 + 60)  # ... and a day later nobody has run the retention timer
    log.append("stop", {"reason": "shutdown", "uptime_ms": 2})
    log.close()
    assert on_time.problems == []
    result = check(tmp_path / "audit", key)
    assert not result.ok
    assert result.problems == [
        "segment-000000000000.jsonl: purge overdue: 2 segment(s) kept more than a day after "
        "retention.audit_days (365) allowed their purge, at the last entry"
    ]


def test_deleting_the_last_checkpoints_of_a_long_tail_is_caught(audit: Path, key: Ed25519PrivateKey) -> None:
    """Removing the newest notes leaves more unsigned entries than the log ever allows."""
    cps = audit / "checkpoints.log"
    lines = cps.read_text().splitlines(keepends=True)
    cps.write_text("".join(lines[:-15]))  # drop the checkpoints at 30, 35 and 36
    assert check(audit, key).problems == [
        "segment-000000000030.jsonl line 1 (entry 30): 6 entries since the last checkpoint in "
        "checkpoints.log, but the log signs one at least every 5: a checkpoint was deleted",
        "segment-000000000030.jsonl: the log signs a checkpoint whenever a segment starts, but "
        "checkpoints.log has none at size 30: a checkpoint was deleted",
    ]


def test_a_crash_leaves_fewer_unsigned_entries_than_n_and_verifies(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log(checkpoint_every_entries=5, segment_max_entries=1000)
    for _ in range(7):
        log.append("frames", frames())
    os.close(log._fd)  # kill -9: no close(), entries 5..7 unsigned
    result = check(tmp_path / "audit", key)
    assert result.ok
    assert result.warnings == [
        "entries 5..7 are not yet covered by a signed checkpoint "
        "(the device is running or was stopped without a clean shutdown)"
    ]
    reopened = open_log(checkpoint_every_entries=5, segment_max_entries=1000)  # signs at once
    reopened.close()
    assert check(tmp_path / "audit", key).warnings == []


def test_a_log_that_spans_a_key_rotation_verifies_with_both_keys_only(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    log = open_log()
    fill(log, clock, 2)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 120_000})
    log.close()
    new = Ed25519PrivateKey.generate()
    rotated = AuditLog.open(
        tmp_path / "audit", new, ORIGIN, clock, AuditConfig(checkpoint_every_entries=10)
    )
    rotated.append("key_event", {"event": "rotated", "kid": "new-kid"})
    fill(rotated, clock, 2)
    rotated.close()
    only_old = check(tmp_path / "audit", key)
    assert "checkpoint rejected: no signature by the trusted key" in only_old.problems[0]
    both = verify_log(tmp_path / "audit", [key.public_key(), new.public_key()])
    assert both.problems == []
    assert both.warnings == []


@pytest.mark.parametrize("segment_max_entries", [10, 1000])
def test_a_run_that_ended_with_no_stop_is_a_warning_naming_the_start_that_found_it(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey, segment_max_entries: int
) -> None:
    """A run killed with -9 (or a power loss) writes no stop, and its last frames and window are
    in no entry; verify said "OK: every entry ... verified" and the report showed nothing
    (found by an auditor's trial). A segment begun inside a run carries on the run (10)."""
    log = open_log(checkpoint_every_entries=5, segment_max_entries=segment_max_entries)
    fill(log, clock, 3)  # killed: no stop
    fill(log, clock, 2)  # the next start, then a clean stop
    log.append("stop", {"reason": "shutdown", "uptime_ms": 120_000})
    fill(log, clock, 1)  # the run still running when the auditor reads: not an unclean end
    log.close()
    result = check(tmp_path / "audit", key)
    assert result.problems == []
    (warning,) = [w for w in result.warnings if "no stop entry" in w]
    assert warning.startswith("1 run(s) ended with no stop entry (killed, crashed or power lost)")
    assert "in no entry" in warning
    starts = [e for e in _entries(tmp_path / "audit") if e.kind == "start"]
    assert f"entry {starts[1].index} (" in warning


def _entries(audit: Path) -> list[Entry]:
    segments = sorted(audit.glob("segment-*.jsonl"))
    return [decode_entry(line) for p in segments for line in p.read_bytes().splitlines()]


def test_a_clean_stop_before_a_purged_segment_is_not_called_unclean(
    open_log: OpenLog, clock: FakeClock, tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """The first kept segment, begun at a restart, copies the last start in its head whether or
    not that run stopped: it was taken for a run still going, and the next start for a kill
    (found by review)."""
    log = open_log(retention_days=365, checkpoint_every_entries=5, segment_max_entries=1000)
    fill(log, clock, 3)
    log.append("stop", {"reason": "shutdown", "uptime_ms": 180_000})
    log.close()
    clock.advance(366 * 86_400)
    log = open_log(retention_days=365, checkpoint_every_entries=5, segment_max_entries=1000)
    fill(log, clock, 2)  # the next run, in the segment the open began
    assert log.purge() is not None  # the first run's segment is past retention
    log.append("stop", {"reason": "shutdown", "uptime_ms": 120_000})
    log.close()
    result = check(tmp_path / "audit", key)
    assert result.problems == []
    assert not [w for w in result.warnings if "no stop entry" in w], result.warnings
