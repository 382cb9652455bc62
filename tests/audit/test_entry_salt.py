"""Each audit entry carries 128 random bits, so the proofs a checkpoint publishes give nothing
back (found by review): a proof's node over a suppressed window's entries (its ``frames``
entry, a ``window`` entry that is the same for every suppressed window, the ``publish`` records
of messages any subscriber saw) was a hash over a few thousand likely lines, and trying them
all gave the frames analysed and dropped and the longest frame lifetime, which grow with the
faces in view."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.audit import AuditConfig, AuditLog
from agent.audit.entries import decode_entry
from agent.audit.verify import verify_log
from agent.clock import FakeClock
from agent.errors import PayloadError

from .helpers import ORIGIN, frames, start, window


def _write(folder: Path, key: Ed25519PrivateKey) -> list[bytes]:
    """A run's entries at fixed times; the lines of its segments."""
    clock = FakeClock(start=1_700_000_000.0)
    log = AuditLog.open(folder, key, ORIGIN, clock, AuditConfig(checkpoint_every_entries=4))
    log.append("start", start())
    for _ in range(3):
        clock.advance(60)
        log.append("frames", frames(captured=54, analysed=14, dropped=36))
        log.append("window", window(people=0, published=False, suppressed="below_k"))
    log.close()
    return [line for seg in sorted(folder.glob("segment-*.jsonl")) for line in seg.read_bytes().splitlines()]


def _leaves(lines: list[bytes]) -> set[bytes]:
    return {hashlib.sha256(b"\x00" + line).digest() for line in lines}


def test_the_same_entries_at_the_same_times_share_no_leaf_with_another_run(tmp_path: Path) -> None:
    """Someone who knows (or guesses) every field of every entry, as a subscriber can for a
    suppressed window, rebuilds none of the log's hashes: before, two runs with the same
    entries at the same times had the same leaves, hence the same proof nodes and roots."""
    key = Ed25519PrivateKey.generate()
    first, second = _write(tmp_path / "a", key), _write(tmp_path / "b", key)
    assert len(first) == len(second) > 6
    assert not _leaves(first) & _leaves(second)
    assert verify_log(tmp_path / "a", key.public_key()).ok
    salts = [json.loads(line)["salt"] for line in first]
    assert len(set(salts)) == len(salts)
    assert all(len(s) == 32 and int(s, 16) >= 0 for s in salts)


@pytest.mark.parametrize("salt", ["ABCDEF0123456789ABCDEF0123456789", "00", 7, None])
def test_a_salt_that_is_not_32_lower_case_hex_digits_is_refused(salt: object) -> None:
    line = b'{"data":{"reason":"shutdown","uptime_ms":1},"i":0,"kind":"stop","salt":' + json.dumps(
        salt).encode() + b',"ts":0}'
    with pytest.raises(PayloadError, match="'salt' must be 32 lower-case hex digits"):
        decode_entry(line)


def test_a_line_without_a_salt_is_still_read(tmp_path: Path) -> None:
    """Logs written before entries had a salt verify as they are (tests/audit/test_legacy.py
    verifies and appends to one)."""
    entry = decode_entry(b'{"data":{"reason":"shutdown","uptime_ms":1},"i":0,"kind":"stop","ts":0}')
    assert entry.kind == "stop"
